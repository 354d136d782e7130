"""One reading of an image, shared by every inspector that looks at it.

oslo.utils' wrapper runs one inspector per format over every chunk.  Here the library reads
the bytes once (a forward pass through :class:`~imageintrospect.stream.StreamInspector`, or a
seekable :func:`~imageintrospect.introspect` of a file) and every inspector object only asks
this reading what it found.  The reading answers three questions cheaply, because oslo's
callers poll them after every read:

- which oslo format names the content has (None until decided);
- whether one format is already ruled in or out by the first bytes (the early abort with
  ``expected_format``);
- after the end: the :class:`~imageintrospect.Metadata` and the safety failures, keyed by
  check name.
"""

from __future__ import annotations

import os
from typing import Any

from .. import detect, formats
from ..core import introspect, stream_inspector
from ..errors import ImageIntrospectError
from ..formats.base import Probe
from ..frozen import frozen
from ..metadata import Metadata

#: The head a compat reading always holds.  oslo's callers bound an inspector's memory at
#: 512 KiB (its own suite asserts it), so the drop-in holds less than the library's default
#: 960 KiB; what lies further in is kept because the parser asks for it as it streams by.
HEAD_KEEP = 256 * 1024

#: The bytes after which a format's verdict on the head alone is final, for the formats
#: known by a signature at a fixed place near the start (see each format module's ``probe``).
#: A VMDK can also be a text descriptor, and a VHD a footer at the end: only their
#: signatures decide early (a positive verdict), never their absence.
DECIDED_BY_HEAD = {"qcow2": 4, "qed": 4, "luks": 6, "vhdx": 8, "vdi": 0x44}
SIGNED_AT_START = {**DECIDED_BY_HEAD, "vmdk": 8, "vhd": 8}


@frozen
class Violation:
    """One failed safety check: its oslo-style name and why."""

    name: str
    message: str


#: Finding codes whose check oslo names: (check name, oslo's wording).  Every other unsafe
#: finding fails a check named after its code (``vhd-differencing`` -> ``vhd_differencing``).
OSLO_CHECKS = {
    "backing-file": ("backing_file", "Image has a backing file"),
    "external-data-file": ("data_file", "Image has data_file set"),
    "unknown-incompatible-feature": ("unknown_features", "Unknown QCOW2 features found"),
    "unsupported-version": ("unknown_features", "Unsupported qcow2 version"),
    "qed-image": ("banned", "This file format is not allowed"),
    "qed-bad-header": ("banned", "This file format is not allowed"),
    "vmdk-not-self-contained": ("descriptor", "Unsupported subformat"),
    "vmdk-descriptor-without-header": ("descriptor", "Unsupported subformat"),
    "vmdk-external-extent": ("descriptor", "Invalid extent filenames found"),
    "vmdk-extent-path-escape": ("descriptor", "Invalid extent filenames found"),
    "vmdk-descriptor-out-of-range": ("descriptor", "Wrong descriptor location"),
    "vmdk-descriptor-too-large": ("descriptor", "Invalid VMDK descriptor data"),
    "vmdk-descriptor-duplicate-key": ("descriptor", "Invalid VMDK descriptor data"),
    "vmdk-parent-file": ("descriptor", "Invalid VMDK descriptor data"),
    "vmdk-parent-cid": ("descriptor", "Invalid VMDK descriptor data"),
    "vmdk-stream-footer-missing": ("footer", "Footer is missing"),
    "vmdk-stream-footer-invalid": ("footer", "Footer marker is invalid"),
    "vmdk-footer-mismatch": ("footer", "Header and footer do not match"),
    "luks-unsupported-version": ("version", "LUKS version is not supported"),
    # A partition table's problems are warnings for the library; oslo's ``mbr`` check
    # fails on them, and Glance decides per configuration whether that is fatal.
    "mbr-bad-partition": ("mbr", "Invalid MBR partition table"),
}


def check_name(code: str) -> str:
    known = OSLO_CHECKS.get(code)
    return known[0] if known else code.replace("-", "_")


#: Findings of a partition table the library could not accept (a protective MBR without its
#: GPT, overlapping entries): still a partitioned disk to oslo's callers.
PARTITION_PROBLEMS = frozenset(
    {"mbr-bad-partition", "gpt-header-invalid", "gpt-crc-mismatch", "gpt-partition-out-of-range"}
)


def oslo_names(metadata: Metadata, claims: list[str]) -> list[str]:
    """The oslo format names of an image: several for a polyglot, ``gpt`` for a disk with a
    partition table (raw to the library), ``iso`` and ``gpt`` for a hybrid ISO."""
    if len(claims) > 1:
        return claims
    if metadata.format == "raw":
        partitioned = metadata.partition_table or metadata.codes() & PARTITION_PROBLEMS
        return ["gpt"] if partitioned else ["raw"]
    if metadata.format == "iso" and metadata.partition_table:
        return ["iso", "gpt"]
    return [metadata.format]


def claims_of(probe: Probe) -> list[str]:
    """The formats that claim the probe's bytes (one, or several for a polyglot)."""
    return [spec.name for spec in detect.coexisting(detect.claimants(probe), probe)]


class Reading:
    """What one image's bytes say, as far as they have been read."""

    def __init__(self) -> None:
        self._stream = stream_inspector(deep=True, expected_format=None, head_keep=HEAD_KEEP)
        self._collector = self._stream.collector
        self.feed = self._stream.feed
        self.broken = False  # feeding raised: only the final parse will tell
        self.metadata: Metadata | None = None
        self.error: ImageIntrospectError | None = None
        self._final: list[str] | None = None
        self._early: list[str] | None = None
        self._early_checked = False
        self.finished = False
        self._size = 0  # the image's true size, once known
        self._file_head = b""  # the head of a file read at random

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes as far as they are known (fewer while streaming)."""
        if self._file_head:
            return self._file_head[:size]
        return bytes(self._collector.head[:size])

    # -- feeding ------------------------------------------------------------------------
    @property
    def position(self) -> int:
        return self._collector.position

    def eat(self, chunk: bytes) -> None:
        """Feed a chunk; a defect met while streaming is kept for the end, never raised."""
        if self.finished:
            raise RuntimeError(
                "Inspector has been marked finished, no more data processing allowed"
            )
        if self.broken or not chunk:
            return
        if isinstance(chunk, str):  # some callers' tests hand text through (Glance's do)
            chunk = chunk.encode()
        try:
            self.feed(chunk if type(chunk) is bytes else bytes(chunk))
        except Exception:  # the final parse runs again and reports what is wrong
            self.broken = True

    def finish(self) -> None:
        """The end of the stream: the final parse gives the answer."""
        if self.finished:
            return
        self.finished = True
        self._size = self.position
        try:
            self.metadata = self._stream.finish()
        except ImageIntrospectError as exc:
            self.error = exc
        self._final = self._names(self._stream_probe())

    def finish_from_file(self, path: str | os.PathLike[str] | Any) -> None:
        """Read a whole image at random (a path or a seekable file): the answer needs only
        the structures, not every byte."""
        self.finished = True
        try:
            if not isinstance(path, (str, bytes, os.PathLike)):
                path.seek(0)  # a file object is read from where it stands
            self.metadata = introspect(path)
        except ImageIntrospectError as exc:
            self.error = exc
        if self.metadata is not None and self.metadata.image_size is not None:
            self._size = self.metadata.image_size
        else:
            self._size = _size_of(path)
        probe = _file_probe(path, self._size)
        self._file_head = probe.head
        self._final = self._names(probe)

    # -- verdicts -------------------------------------------------------------------------
    def names(self) -> list[str] | None:
        """The oslo format names, or None while undecided (cheap: polled after each read)."""
        if self._final is not None:
            return self._final
        if self._early is not None or self._early_checked:
            return self._early
        if self.position < detect.PROBE_HEAD:
            return None
        self._early_checked = True
        head = bytes(self._collector.head[: detect.PROBE_HEAD])
        claims = claims_of(Probe(head=head, tail=b"", size=-1))
        # Only signatures at the start decide before the end: an ISO may be hybrid (a
        # partition table to name), anything else may still turn out a fixed VHD.
        if claims and all(name in SIGNED_AT_START for name in claims):
            self._early = claims
        return self._early

    def says(self, name: str) -> bool | None:
        """Whether the content is ``name`` (True/False), or None while that is not known."""
        names = self.names()
        if names is not None:
            return name in names
        need = SIGNED_AT_START.get(name)
        if need is None or self.position < need:
            return None
        head = bytes(self._collector.head[:need])
        entry = formats.get(name)  # every key of SIGNED_AT_START is a registered format
        if entry is not None and entry.spec().probe(Probe(head=head, tail=b"", size=-1)):
            return True
        return False if name in DECIDED_BY_HEAD else None

    def violations(self) -> list[Violation]:
        """Every reason the image is unsafe, in the order found."""
        if self.error is not None:
            return [Violation("invalid_image", str(self.error))]
        if self.metadata is None:
            return []
        found = []
        for finding in self.metadata.findings:
            if finding.severity == "unsafe" or finding.code in OSLO_CHECKS:
                known = OSLO_CHECKS.get(finding.code)
                message = f"{known[1]}: {finding.message}" if known else finding.message
                found.append(Violation(check_name(finding.code), message))
        return found

    def held(self) -> dict[str, int]:
        """Bytes this reading holds: the head, ranges kept for the parser, and earlier chunks
        kept for the tail (the chunk just handed to the caller is not a copy, not counted)."""
        return self._collector.held()

    @property
    def size(self) -> int:
        return self._size if self.finished else self.position

    # -- internals ------------------------------------------------------------------------
    def _names(self, probe: Probe) -> list[str]:
        claims = claims_of(probe)
        if self.metadata is not None:
            return oslo_names(self.metadata, claims)
        return claims or ["raw"]  # not describable: the signature still names it

    def _stream_probe(self) -> Probe:
        collector = self._collector
        head = bytes(collector.head[: detect.PROBE_HEAD])
        size = collector.position
        tail_start = max(len(head), size - detect.PROBE_TAIL)
        tail = b""
        if tail_start < size and tail_start >= collector.tail_start:
            tail = collector.tail[tail_start - collector.tail_start :]
        if tail_start == len(head):
            tail = (head + tail)[-detect.PROBE_TAIL :]
        return Probe(head=head, tail=tail, size=size)


def _size_of(source: Any) -> int:
    try:
        if isinstance(source, (str, bytes, os.PathLike)):
            return os.stat(source).st_size
        return os.fstat(source.fileno()).st_size
    except (OSError, TypeError, ValueError, AttributeError):
        return 0


def _file_probe(source: Any, size: int) -> Probe:
    """The probe of a file (a path or a seekable file object), as ``detect.read_probe``
    takes it from a source; a file object's position is left as it was."""
    try:
        if isinstance(source, (str, bytes, os.PathLike)):
            with open(source, "rb") as f:
                return _probe_from(f, size)
        position = source.tell()
        try:
            return _probe_from(source, size)
        finally:
            source.seek(position)
    except (OSError, TypeError, ValueError, AttributeError):
        return Probe(head=b"", tail=b"", size=0)


def _probe_from(f: Any, size: int) -> Probe:
    f.seek(0)
    head = f.read(detect.PROBE_HEAD)
    tail_start = max(len(head), size - detect.PROBE_TAIL)
    f.seek(tail_start)
    tail = f.read(max(0, size - tail_start))
    if tail_start == len(head):
        tail = (head + tail)[-detect.PROBE_TAIL :]
    return Probe(head=head, tail=tail, size=size)
