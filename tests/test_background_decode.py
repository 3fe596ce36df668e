"""BackgroundDecoder: a chunk's decoding runs while the caller goes on, in order, one chunk at a time."""

import threading

import pytest
import torch

from motionstream_core import BackgroundDecoder

WAIT = 30  # seconds; only reached when something is broken


def test_the_caller_goes_on_while_a_chunk_decodes_and_chunks_leave_in_order():
    release = threading.Event()
    done, threads = [], set()

    def work(latents, index):
        threads.add(threading.get_ident())
        if index == 0:
            assert release.wait(WAIT), "the caller never got past submit"
        done.append((index, float(latents.sum())))

    with BackgroundDecoder(work) as background:
        background.submit(torch.ones(2), 0)
        assert done == [], "submit returned while chunk 0 was still decoding"
        release.set()  # the caller generated the next chunk meanwhile
        background.submit(torch.full((2,), 2.0), 1)  # waits for chunk 0 first: one chunk in flight
        assert done[0] == (0, 2.0)
        background.wait()
    assert done == [(0, 2.0), (1, 4.0)]
    assert threading.get_ident() not in threads


def test_an_error_in_a_chunk_comes_back_to_the_caller():
    def work(latents, index):
        if index == 1:
            raise RuntimeError("decoder broke")

    background = BackgroundDecoder(work)
    background.submit(torch.zeros(1), 0)
    background.submit(torch.zeros(1), 1)
    with pytest.raises(RuntimeError, match="decoder broke"):
        background.wait()
    background.submit(torch.zeros(1), 2)  # it goes on working after reporting
    background.close()


def test_close_waits_for_the_chunk_in_flight_without_raising():
    finished = []

    def work(latents):
        finished.append(True)
        raise ValueError("ignored at close: the caller is ending anyway")

    background = BackgroundDecoder(work)
    background.submit(torch.zeros(1))
    background.close()
    assert finished == [True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_worker_sees_the_latents_the_generating_stream_made():
    results = []
    with BackgroundDecoder(lambda latents: results.append(latents.sum().item()), "cuda") as background:
        for value in range(5):
            latents = torch.full((1024, 1024), float(value), device="cuda")
            latents.mul_(2)
            background.submit(latents)
        background.wait()
    assert results == [2.0 * 1024 * 1024 * value for value in range(5)]
