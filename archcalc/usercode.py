"""Running a user's own Python code (``archcalc import``): under a time limit,
its exits caught.

Importing a model runs the module, the factory and the forward (the trace).
A forward that never returns is stopped by a timer (SIGALRM, main thread
only) and ends in one line naming the target and how to raise the limit; a
module that calls ``sys.exit(0)`` or raises another BaseException ends in one
line too, never in the exit status the user's code chose.
"""
from __future__ import annotations

import math
import signal
import threading
from contextlib import contextmanager

from . import limits
from .errors import SpecError


class TimedOut(BaseException):
    """Raised into the user's code when the time is up: a BaseException, so an
    `except Exception` in that code does not swallow it."""


def parse_timeout(value) -> float:
    """--timeout SECONDS: finite and positive; None is the limit's default."""
    if value is None:
        return float(limits.IMPORT_TIMEOUT_S.value)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"--timeout takes seconds, e.g. --timeout 300. Received: "
                        f"{str(value)[:40]!r}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= 10 ** 7):
        raise SpecError(f"--timeout takes a positive number of seconds (at most 10^7). "
                        f"Received: {str(value)[:40]!r}")
    return seconds


@contextmanager
def _alarm(seconds: float):
    """SIGALRM after `seconds`, then every second (user code that catches the
    first one gets another); nothing outside the main thread, where signals
    cannot be set."""
    if threading.current_thread() is not threading.main_thread() or \
            not hasattr(signal, "setitimer"):
        yield
        return

    def fire(signum, frame):
        raise TimedOut()
    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def running_user_code(label: str, seconds: float):
    """Run an import of `label` (MODULE:FACTORY) within `seconds`; a timeout
    or an exit from its code becomes one SpecError (exit status 2)."""
    try:
        with _alarm(seconds):
            yield
    except TimedOut:
        raise SpecError(f"importing {label} did not finish within {seconds:g} s (a module, "
                        "factory or forward that never returns?); raise the limit with "
                        f"--timeout SECONDS or {limits.IMPORT_TIMEOUT_S.env}=N") from None
    except SystemExit as e:
        raise SpecError(f"importing {label}: its code called sys.exit({_short(e.code)}); "
                        "a model's module must not exit") from None
    except KeyboardInterrupt:
        raise
    except (SpecError, Exception):
        raise
    except BaseException as e:  # GeneratorExit and other BaseExceptions of the user's
        raise SpecError(f"importing {label}: its code raised {type(e).__name__}: "
                        f"{_short(e)}") from None


def _short(value) -> str:
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
