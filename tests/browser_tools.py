"""What the browser tests share: whether a missing browser tool skips a test or fails it."""

import os

import pytest

# CI sets it: then a missing node, chromium or playwright-core fails the browser tests instead of skipping them.
REQUIRE_BROWSER = os.environ.get("MOTIONSTREAM_REQUIRE_BROWSER") == "1"


def missing(reason: str) -> None:
    """Skips the test for a missing tool, or fails it when the browser tools are required."""
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} (MOTIONSTREAM_REQUIRE_BROWSER=1)")
    pytest.skip(reason)
