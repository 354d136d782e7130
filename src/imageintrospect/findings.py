"""Findings and the registry of their codes.

A finding is one fact about an image that a caller may act on.  Every code is defined once,
with its severity and a one-line description, by the module whose checks raise it
(``define`` at import time); the documentation's table of codes is generated from this
registry, and ``Findings.add`` refuses an undefined code, so docs and behaviour cannot drift.
"""

from __future__ import annotations

from typing import Literal

from .frozen import frozen

Severity = Literal["unsafe", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("unsafe", "warning", "info")


@frozen
class Finding:
    """One observation about an image: a stable kebab-case ``code``, a ``severity``, a message."""

    code: str
    severity: Severity
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity, "message": self.message}


@frozen
class CodeInfo:
    """What a finding code means: its fixed severity, the formats that raise it, a summary."""

    code: str
    severity: Severity
    scope: str
    description: str


REGISTRY: dict[str, CodeInfo] = {}


def define(code: str, severity: Severity, scope: str, description: str) -> str:
    """Register a finding code; returns the code so modules can bind it to a constant."""
    if severity not in SEVERITIES:
        raise ValueError(f"bad severity {severity!r} for {code}")
    known = REGISTRY.get(code)
    if known is not None and (known.severity, known.scope) != (severity, scope):
        raise ValueError(f"finding code {code} defined twice differently")
    REGISTRY[code] = CodeInfo(code, severity, scope, description)
    return code


#: At most this many findings of one code are kept; the rest are counted in a last one.
MAX_PER_CODE = 32
#: At most this many findings in all are kept (the per-code summaries aside): an answer is
#: stored, logged and sent over RPC, so it must not grow with what a hostile image holds.
MAX_FINDINGS = 256
#: A longer message is cut to this many characters (ending in ``...``): a hostile image
#: names things (archive members, backing files) as long as it likes.
MAX_MESSAGE = 1024


class Findings:
    """The findings collected while one image is introspected, in the order they were made.

    Duplicates are dropped, and a hostile image cannot make the list grow without bound: past
    :data:`MAX_PER_CODE` findings of one code, or :data:`MAX_FINDINGS` in all, the others are
    only counted, in one summary finding per code that keeps the code's severity (so a
    finding left out still makes the image unsafe), and no message is longer than
    :data:`MAX_MESSAGE` characters.
    """

    def __init__(self) -> None:
        self._items: list[Finding] = []
        self._seen: set[Finding] = set()
        self._per_code: dict[str, int] = {}
        self._dropped: dict[str, int] = {}

    def add(self, code: str, message: str) -> None:
        info = REGISTRY.get(code)
        if info is None:
            raise KeyError(f"undefined finding code {code!r}")
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        self._keep(Finding(code, info.severity, message))

    def extend(self, findings: tuple[Finding, ...] | list[Finding]) -> None:
        for finding in findings:
            self._keep(finding)

    def _keep(self, finding: Finding) -> None:
        if finding in self._seen:
            return
        count = self._per_code.get(finding.code, 0)
        if count >= MAX_PER_CODE or len(self._items) >= MAX_FINDINGS:
            self._dropped[finding.code] = self._dropped.get(finding.code, 0) + 1
            return
        self._per_code[finding.code] = count + 1
        self._seen.add(finding)
        self._items.append(finding)

    def codes(self) -> set[str]:
        return set(self._per_code)

    def _left_out(self, code: str, count: int) -> str:
        if self._per_code.get(code):
            return f"... and {count} more like the above"
        return f"{count} finding(s) of this code left out: the list holds {MAX_FINDINGS} at most"

    def freeze(self) -> tuple[Finding, ...]:
        summaries = [
            Finding(code, REGISTRY[code].severity, self._left_out(code, count))
            for code, count in self._dropped.items()
        ]
        return (*self._items, *summaries)


# Codes that belong to no single format.
FORMAT_AMBIGUOUS = define(
    "format-ambiguous",
    "unsafe",
    "any",
    "Two or more formats claim the same bytes (a polyglot); both are named in the message.",
)
TRUNCATED = define(
    "truncated",
    "unsafe",
    "any",
    "The file ends before a structure that its header says is there.",
)
STREAM_UNCHECKED = define(
    "stream-unchecked",
    "info",
    "any",
    "Read as a stream: a structure lay outside what a forward read keeps, so it was not checked.",
)
LIST_CAPPED = define(
    "list-capped",
    "info",
    "any",
    "A list in the answer (snapshots, bitmaps, archive members) was longer than an answer "
    "holds: the first entries are listed, and the message counts them all.",
)
QEMU_CANNOT_OPEN = define(
    "qemu-cannot-open",
    "unsafe",
    "any",
    "qemu refuses to open the image (qemu-img info fails; the message gives qemu's reason): "
    "a consumer that runs qemu cannot use it.",
)
