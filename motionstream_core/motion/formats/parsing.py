"""Validation shared by the track importers: JSON text, scalars, and the size limits of a track set.

Every helper raises ``ValueError`` with a message naming the offending value, so an importer's
errors read the same whatever the format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..tracks import MAX_FRAMES, MAX_TRACK_POINTS, MAX_TRACKS, OUT_OF_FRAME_MARGIN

MAX_JSON_CHARS = 64 * 1024 * 1024
# No field admits an integer anywhere near this long; longer ones are not converted at all (Python
# refuses past 4,300 digits, and converting is quadratic in the length where that limit is lifted).
MAX_JSON_INTEGER_DIGITS = 100


class HugeInteger:
    """What :func:`load_json` puts where the text has an integer of more than
    :data:`MAX_JSON_INTEGER_DIGITS` digits, so the field that holds it is named in the error
    (by :func:`finite_number`, :func:`bounded_integer`, :func:`describe`) or it is ignored with
    the rest of an unknown key."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"an integer of {self.digits} digits"


def _parse_int(text: str) -> int | HugeInteger:
    digits = len(text) - text.startswith("-")
    return HugeInteger(digits) if digits > MAX_JSON_INTEGER_DIGITS else int(text)


def load_json(source: str | bytes | bytearray, what: str, allow_single_quotes: bool = False) -> Any:
    """Parse JSON text; ``allow_single_quotes`` also accepts Python-style quoting, as older KJNodes prints."""
    if isinstance(source, (bytes, bytearray)):
        try:
            source = bytes(source).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} is not valid UTF-8 text") from None
    if not isinstance(source, str):
        raise ValueError(f"{what} must be a string, got {type(source).__name__}")
    if len(source) > MAX_JSON_CHARS:
        raise ValueError(f"{what} is larger than {MAX_JSON_CHARS} characters")
    if not source.strip():
        raise ValueError(f"{what} is empty")
    try:
        return json.loads(source, parse_int=_parse_int)
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    except json.JSONDecodeError as error:
        if allow_single_quotes and "'" in source:
            return load_json(source.replace("'", '"'), what)
        raise ValueError(f"{what} is not valid JSON: {error}") from None


def finite_number(value: Any, what: str) -> float:
    if isinstance(value, HugeInteger):
        raise ValueError(f"{what} is out of range: {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{what} is out of range") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {number}")
    return number


def bounded_integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, HugeInteger):
        raise ValueError(f"{what} must be in [{low}, {high}], got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {describe(value)}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be in [{low}, {high}], got {value}")
    return value


def strict_boolean(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {describe(value)}")
    return value


def describe(value: Any) -> str:
    """A short repr of ``value`` for an error message."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # absurdly deep nesting, ints past Python's digit limit
        return f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def keyframe_list(raw: Any, owner: str) -> list:
    """The non-empty 'keyframes' list of a widget track or region (`owner` names it in errors)."""
    keyframes = raw.get("keyframes")
    if not isinstance(keyframes, list) or not keyframes:
        raise ValueError(f"{owner} needs a non-empty 'keyframes' list")
    return keyframes


def keyframe_point(keyframe: Any, where: str) -> tuple[float, float, float]:
    """(t, x, y) of a widget keyframe: t in seconds, x and y normalised and at most the margin outside the frame."""
    if not isinstance(keyframe, Mapping):
        raise ValueError(f"{where} must be an object, got {describe(keyframe)}")
    time = finite_number(keyframe.get("t"), f"'t' of {where}")
    if time < 0:
        raise ValueError(f"'t' of {where} must not be negative, got {time}")
    x = finite_number(keyframe.get("x"), f"'x' of {where}")
    y = finite_number(keyframe.get("y"), f"'y' of {where}")
    low, high = -OUT_OF_FRAME_MARGIN, 1.0 + OUT_OF_FRAME_MARGIN
    if not (low <= x <= high and low <= y <= high):
        raise ValueError(
            f"{where} at ({x:g}, {y:g}) lies far outside the frame; "
            f"normalised coordinates must be in [{low:g}, {high:g}]"
        )
    return time, x, y


def check_track_count(count: int) -> None:
    if count == 0:
        raise ValueError("no tracks")
    if count > MAX_TRACKS:
        raise ValueError(f"too many tracks: {count} (the limit is {MAX_TRACKS})")


def check_frame_count(num_frames: int, num_tracks: int) -> None:
    if num_frames > MAX_FRAMES:
        raise ValueError(f"too many frames: {num_frames} (the limit is {MAX_FRAMES})")
    if num_frames * num_tracks > MAX_TRACK_POINTS:
        raise ValueError(
            f"{num_frames} frames x {num_tracks} tracks exceed the limit of {MAX_TRACK_POINTS} points"
        )
