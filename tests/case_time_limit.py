"""A per-case time limit for tests of parsers and loaders that once looped forever on hostile input."""

import contextlib
import signal


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException, so no `except Exception` in the code under test hides it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fails the case with CaseTimeout after `seconds` instead of hanging the suite (SIGALRM, main thread)."""
    if not hasattr(signal, "setitimer"):  # no alarms on this platform: the case runs unbounded
        yield
        return

    def expire(signum, frame):
        raise CaseTimeout(f"a case ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
