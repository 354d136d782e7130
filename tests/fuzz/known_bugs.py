"""Library defects the fuzzers found that are not fixed yet, recognised by their signature.

A fuzzer that meets one of these does not fail: it records a hypothesis ``event`` (shown by
``pytest --hypothesis-show-statistics``) and moves on to the next input, so the suite keeps
hunting for *new* defects while these wait for a fix in ``src/``.  Each entry has an exact
reproducer in ``test_known_bugs.py``, marked ``xfail(strict=True)``: the day the library is
fixed that test passes, fails the suite as XPASS, and its entry here must be deleted.

A signature is deliberately narrow (the exception type *and* the function that raised it, or
the exact shape of a disagreement), so that a different defect with a similar symptom still
fails the fuzzer.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Failure:
    """What a property violation looked like."""

    kind: str  # "internal" (InternalParserError), "disagree", ...
    exc: BaseException | None = None
    seekable: Any = None  # properties.Outcome
    streamed: Any = None
    size: int = 0  # of the input


@dataclass(frozen=True)
class KnownBug:
    key: str
    summary: str
    matches: Callable[[Failure], bool]


def raised_in(exc: BaseException | None, path_suffix: str, function: str) -> bool:
    """True when ``exc`` (or its cause) was raised through ``function`` of ``path_suffix``."""
    for error in (exc, exc.__cause__ if exc is not None else None):
        if error is None:
            continue
        for frame in traceback.extract_tb(error.__traceback__):
            if frame.filename.endswith(path_suffix) and frame.name == function:
                return True
    return False


def _internal(cause_type: type[BaseException], path: str, function: str, text: str = "") -> Any:
    def match(failure: Failure) -> bool:
        cause = failure.exc.__cause__ if failure.exc is not None else None
        return (
            failure.kind == "internal"
            and isinstance(cause, cause_type)
            and text in str(cause)
            and raised_in(failure.exc, path, function)
        )

    return match


#: Open defects.  Empty: the four the fuzzers found (LUKS2 shake checksums, OVF unit digits,
#: LUKS2 dense JSON memory, a streamed qcow2 L2 walk checked before the size was known) are
#: fixed, and their reproducers run as regressions in test_known_bugs.py.
KNOWN_BUGS: tuple[KnownBug, ...] = ()


def known(failure: Failure) -> KnownBug | None:
    return next((bug for bug in KNOWN_BUGS if bug.matches(failure)), None)
