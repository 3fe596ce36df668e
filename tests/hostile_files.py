"""Hostile array files for the track-loader tests: .npy headers that declare any shape, and zip bombs."""

import io
import struct
import zlib

from numpy.lib import format as npy_format


def npy_header(descr, shape, fortran_order=False) -> bytes:
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": fortran_order, "shape": shape})
    return buffer.getvalue()


def zip_bytes(members: dict[str, tuple[bytes, int]], block: int = 2**22) -> bytes:
    """A zip of deflated members, each ``prefix`` bytes and then ``zeros`` zero bytes (a bomb when large).

    After a full flush deflate starts afresh, so one compressed block of zeros is repeated.
    """
    out, central = io.BytesIO(), []
    for name, (prefix, zeros) in members.items():
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        pieces, crc = [compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)], zlib.crc32(prefix)
        count, rest = divmod(zeros, block)
        if count:
            zero_block = bytes(block)
            pieces.append((compressor.compress(zero_block) + compressor.flush(zlib.Z_FULL_FLUSH)) * count)
            for _ in range(count):
                crc = zlib.crc32(zero_block, crc)
        pieces.append(compressor.compress(bytes(rest)) + compressor.flush())
        crc = zlib.crc32(bytes(rest), crc)
        data, encoded = b"".join(pieces), name.encode()
        fields = (20, 0, 8, 0, 0x21, crc, len(data), len(prefix) + zeros, len(encoded))
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + encoded + data)
        central.append(struct.pack("<IH", 0x02014B50, 20) + struct.pack("<HHHHHIIIH", *fields)
                       + struct.pack("<HHHHII", 0, 0, 0, 0, 0, offset) + encoded)
    directory, start = b"".join(central), out.tell()
    out.write(directory + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(directory), start, 0))
    return out.getvalue()
