"""A drop-in for ``oslo_utils.imageutils.format_inspector``, answering with this library.

Glance and Nova call oslo.utils' format inspector; this module has the same names and the
behaviour they rely on (see ``docs/compat.md``), while every answer (format, sizes, safety)
comes from :mod:`imageintrospect`'s own reading: one pass shared by all inspectors of a
wrapper, the format modules' parsers, and the library's findings as safety failures.
:func:`imageintrospect.compat.install` puts it in place of oslo's module.

The exception classes, :class:`SafetyCheck` and the :class:`FileInspector` base mirror
oslo's so that code catching or subclassing them keeps working.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import struct
from collections.abc import Callable, Iterator
from typing import IO, Any

from ._reading import Reading, Violation
from ._regions import CaptureRegion, EndCaptureRegion, HeadRegion  # the first two: public

LOG = logging.getLogger(__name__)


class ImageFormatError(Exception):
    """The content cannot be inspected as asked (not the format, several formats, ...)."""


class SafetyViolation(Exception):
    """One safety check failed."""


class SafetyCheckFailed(Exception):
    """One or more safety checks failed; ``failures`` maps each check's name to why."""

    def __init__(self, failures: dict[str, Any]) -> None:
        super().__init__("Safety checks failed: {}".format(",".join(failures.keys())))
        self.failures = failures


class SafetyCheck:
    """A named check: calling it raises :class:`SafetyViolation` when it fails."""

    def __init__(
        self, name: str, target_fn: Callable[[], None], description: str | None = None
    ) -> None:
        self.name = name
        self.target_fn = target_fn
        self.description = description

    def __call__(self) -> None:
        try:
            self.target_fn()
        except (SafetyViolation, SafetyCheckFailed):
            raise
        except Exception as exc:  # a broken check must fail closed
            LOG.error("Failed to run safety check %s: %s", self.name, exc)
            raise SafetyViolation("Unexpected error") from exc

    @classmethod
    def null(cls) -> SafetyCheck:
        """A check that always passes, for formats with nothing to check beyond findings."""
        return cls("null", lambda: None, "This file format has no meaningful safety check")

    @classmethod
    def banned(cls) -> SafetyCheck:
        """A check that always fails, for formats that are recognised but never allowed."""

        def fail() -> None:
            raise SafetyViolation("This file format is not allowed")

        return cls("banned", fail, "This file format is not allowed")


class FileInspector:
    """One format's view of an image.

    Fed with :meth:`eat_chunk` (then :meth:`finish`), made by :meth:`from_file`, or created
    by an :class:`InspectWrapper`, which shares one reading among all its inspectors.
    Subclasses set :attr:`NAME` and register their checks in ``_initialize``.
    """

    NAME = ""

    def __init__(self, tracing: bool = False, params: dict[str, str] | None = None) -> None:
        self._tracing = tracing
        self._params = params or {}
        self._safety_checks: dict[str, SafetyCheck] = {}
        self._capture_regions: dict[str, CaptureRegion] = {}
        self._reading = Reading()
        self._shared = False  # True when a wrapper feeds the reading for all its inspectors
        self._initialize()
        if not self._safety_checks:
            raise RuntimeError("All inspectors must define at least one safety check")
        if "header" not in self._capture_regions:
            self._capture_regions["header"] = HeadRegion(lambda n: self._reading.head(n))

    def _initialize(self) -> None:
        """Register this format's safety checks (every inspector needs at least one)."""

    def add_safety_check(self, check: SafetyCheck) -> None:
        if not isinstance(check, SafetyCheck):
            raise RuntimeError(f"Unable to add safety check of type {type(check).__name__}")
        if check.name in self._safety_checks:
            raise RuntimeError(f"Duplicate check of name {check.name}")
        self._safety_checks[check.name] = check

    def _finding_check(self, name: str) -> SafetyCheck:
        """A check that fails when the reading found problems filed under ``name``."""
        return SafetyCheck(name, functools.partial(self._raise_for, name))

    def _raise_for(self, name: str) -> None:
        reasons = [v.message for v in self._reading.violations() if v.name == name]
        if reasons:
            raise SafetyViolation("; ".join(reasons))

    # -- regions a subclass registers ---------------------------------------------------
    def new_region(self, name: str, region: CaptureRegion) -> None:
        """Have ``region`` filled from the chunks this inspector is fed."""
        if name in self._capture_regions:
            raise RuntimeError(f"Region {name} is already defined")
        self._capture_regions[name] = region

    def has_region(self, name: str) -> bool:
        return name in self._capture_regions

    def region(self, name: str) -> CaptureRegion:
        return self._capture_regions[name]

    def region_complete(self, region_name: str) -> None:
        """Called once when a registered region has all its bytes (a hook for subclasses)."""

    # -- feeding --------------------------------------------------------------------------
    def eat_chunk(self, chunk: bytes) -> None:
        """Present the next chunk of the image."""
        if not self._shared:
            self._reading.eat(chunk)
        self._capture(chunk)

    def _capture(self, chunk: bytes) -> None:
        position = self._reading.position
        for name, region in self._capture_regions.items():
            if not region.complete:
                region.capture(chunk, position)
                if region.complete:
                    self.region_complete(name)

    def finish(self) -> None:
        """The whole image has been presented."""
        self._reading.finish()
        for region in self._capture_regions.values():
            if isinstance(region, EndCaptureRegion):
                region.finish()

    @classmethod
    def from_file(cls, filename: str) -> FileInspector:
        """Inspect a file; :class:`ImageFormatError` if it is not this format."""
        inspector = cls()
        inspector._reading.finish_from_file(filename)
        if not inspector.format_match:
            raise ImageFormatError("File is not in requested format")
        return inspector

    # -- answers --------------------------------------------------------------------------
    @property
    def format_match(self) -> bool:
        """True if the content is this format (False while that is not known)."""
        return bool(self._reading.says(self.NAME))

    @property
    def complete(self) -> bool:
        """True once this inspector knows whether the content is its format."""
        return self._reading.says(self.NAME) is not None

    @property
    def virtual_size(self) -> int:
        """The disk's size as a guest sees it, or 0 while unknown."""
        metadata = self._reading.metadata
        if metadata is None or not self.format_match:
            return 0
        return metadata.virtual_size or 0

    @property
    def actual_size(self) -> int:
        """The image's size in bytes (so far, while streaming)."""
        return self._reading.size

    @property
    def context_info(self) -> dict[str, int]:
        """The bytes held in memory to inspect the image, by purpose."""
        return self._reading.held()

    def __str__(self) -> str:
        return self.NAME

    def safety_check(self) -> None:
        """Raise :class:`SafetyCheckFailed` with every failed check, by name.

        :raises ImageFormatError: if the image was not read far enough, or is not this format.
        """
        reading = self._reading
        if not self.complete:
            raise ImageFormatError("Incomplete file cannot be safety checked")
        if not self.format_match:
            raise ImageFormatError(
                f"Unable to safety check format {self} because content does not match"
            )
        if not reading.finished:
            raise ImageFormatError("Incomplete file cannot be safety checked")
        failures: dict[str, Any] = {}
        for check in self._safety_checks.values():
            try:
                check()
            except SafetyViolation as exc:
                failures[check.name] = exc
            except SafetyCheckFailed as exc:
                for name, failure in exc.failures.items():
                    failures["inner_" + name] = failure
        for violation in self._violations():
            failures.setdefault(violation.name, SafetyViolation(violation.message))
        if failures:
            for name, failure in failures.items():
                LOG.warning("Safety check %s on %s failed because %s", name, self, failure)
            raise SafetyCheckFailed(failures)

    def _violations(self) -> list[Violation]:
        """Failures beyond the registered checks: everything the library finds unsafe."""
        if type(self).NAME not in ALL_FORMATS:
            return []  # a caller's own inspector: the library's findings are not about it
        return [v for v in self._reading.violations() if v.name != "mbr"]


class ContainerFileInspector(FileInspector):
    """A format that wraps another (LUKS): ``inner_format`` is the wrapped one, if known."""

    def __init__(self, tracing: bool = False, params: dict[str, str] | None = None) -> None:
        self._inner_format: FileInspector | None = None
        super().__init__(tracing=tracing, params=params)
        self.add_safety_check(SafetyCheck("inner_safety", self.check_inner_safety))

    @property
    def inner_format(self) -> FileInspector | None:
        return self._inner_format

    def check_inner_safety(self) -> None:
        if self._inner_format is not None:
            self._inner_format.safety_check()


class RawFileInspector(FileInspector):
    NAME = "raw"

    def _initialize(self) -> None:
        self.add_safety_check(SafetyCheck.null())

    @property
    def format_match(self) -> bool:
        return True  # anything can be read as raw bytes

    @property
    def complete(self) -> bool:
        return True

    @property
    def virtual_size(self) -> int:
        return self._reading.size


class QcowInspector(FileInspector):
    NAME = "qcow2"

    def _initialize(self) -> None:
        for name in ("backing_file", "data_file", "unknown_features"):
            self.add_safety_check(self._finding_check(name))


class QEDInspector(FileInspector):
    NAME = "qed"

    def _initialize(self) -> None:
        self.add_safety_check(SafetyCheck.banned())


class VHDInspector(FileInspector):
    NAME = "vhd"

    def _initialize(self) -> None:
        self.add_safety_check(SafetyCheck.null())


class VHDXInspector(FileInspector):
    NAME = "vhdx"

    def _initialize(self) -> None:
        self.add_safety_check(SafetyCheck.null())


class VMDKInspector(FileInspector):
    NAME = "vmdk"
    GD_AT_END = 0xFFFFFFFFFFFFFFFF

    def _initialize(self) -> None:
        self.add_safety_check(self._finding_check("descriptor"))
        self.add_safety_check(self._finding_check("footer"))


class VDIInspector(FileInspector):
    NAME = "vdi"

    def _initialize(self) -> None:
        self.add_safety_check(SafetyCheck.null())


class ISOInspector(FileInspector):
    NAME = "iso"

    def _initialize(self) -> None:
        self.add_safety_check(SafetyCheck.null())


class GPTInspector(FileInspector):
    """A disk with a GPT or MBR partition table (``raw`` to the library)."""

    NAME = "gpt"

    def _initialize(self) -> None:
        self.add_safety_check(self._finding_check("mbr"))

    @property
    def virtual_size(self) -> int:
        return self._reading.size if self.format_match else 0


class LUKSInspector(ContainerFileInspector):
    """A LUKS container.  Its payload is never decrypted: ``inner_format`` stays None
    unless a subclass or caller sets one."""

    NAME = "luks"
    #: The LUKS1 header up to its key slots (big-endian, as the LUKS1 on-disk format).
    _HEADER = struct.Struct(">6sH32s32s32sII20s32sI")
    _ITEMS = ("magic", "version", "cipher_alg", "cipher_mode", "hash", "payload_offset",
              "key_bytes", "mk_digest", "mk_digest_salt", "mk_digest_iter")  # fmt: skip

    def _initialize(self) -> None:
        self.add_safety_check(SafetyCheck("version", self.check_version))
        self.add_safety_check(SafetyCheck("passphrase", self.check_passphrase))

    @property
    def header_items(self) -> dict[str, Any] | None:
        """The LUKS1 header's fields (text fields as stored, null-padded); only
        ``version`` for another version (LUKS2 lays its header out differently); None
        while fewer than its bytes have been read, or if the content is not LUKS."""
        head = self._reading.head(self._HEADER.size)
        if len(head) < self._HEADER.size or not head.startswith(b"LUKS\xba\xbe"):
            return None
        items = dict(zip(self._ITEMS, self._HEADER.unpack(head), strict=True))
        return items if items["version"] == 1 else {"version": items["version"]}

    def check_version(self) -> None:
        """Only LUKS version 1 passes, as in oslo's check, which Glance and Nova apply
        today.  (The library itself reads LUKS2 without a finding; see docs/compat.md.)"""
        self._raise_for("version")
        items = self.header_items
        if items is not None and items["version"] != 1:
            raise SafetyViolation(f"LUKS version {items['version']} is not supported")

    def check_passphrase(self) -> None:
        """With a passphrase, the payload must be shown to hold an inner format.  This
        library never decrypts guest data, so it never finds one itself: fail closed."""
        if self._params.get("luks_passphrase") and self._inner_format is None:
            raise SafetyViolation(
                "Passphrase is incorrect or cannot be verified (the payload is not decrypted)"
            )


class InspectWrapper:
    """Wrap a file-like object or an iterator of chunks; the bytes pass through unchanged.

    ``formats`` and ``format`` are None until the content is decided; reading never raises
    without ``expected_format``.  With it, :class:`ImageFormatError` is raised from ``read``
    (or the iteration) as soon as the content is known not to be that format.
    """

    def __init__(
        self,
        source: IO[bytes] | Iterator[bytes],
        expected_format: str | None = None,
        allowed_formats: list[str] | None = None,
        tracing: bool = False,
        params: dict[str, str] | None = None,
    ) -> None:
        self._source: Any = source
        self._expected_format = expected_format
        self._reading = reading = Reading()
        self._inspectors: list[FileInspector] = []
        for name, cls in ALL_FORMATS.items():
            if not allowed_formats or name in allowed_formats:
                inspector = cls(tracing=tracing, params=params)
                inspector._reading = reading
                inspector._shared = True
                self._inspectors.append(inspector)
        # The expected format is watched until the content is known to be it or not.
        self._watch = expected_format in ALL_FORMATS
        self._finished = False
        # Inspectors whose class overrides eat_chunk (a subclass's hook) are fed each chunk
        # too; one that raises is left out from then on, and the stream goes on.
        self._hooked = [i for i in self._inspectors if type(i).eat_chunk is not _BASE_EAT]

    # -- the stream -------------------------------------------------------------------------
    def read(self, size: int = -1) -> bytes:
        chunk: bytes = self._source.read(size)
        if chunk:
            self._reading.eat(chunk)
            if self._hooked:
                self._feed_hooks(chunk)
            if self._watch:
                self._check_expected()
        elif size != 0:
            self._reading.finish()  # an empty read is the end of the stream
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            chunk: bytes = next(self._source)
        except StopIteration:
            # The end: nothing is left to save by aborting; the verdict is ``format``.
            self._reading.finish()
            raise
        self._reading.eat(chunk)  # (the upload's hot path: no call of ours in between)
        if self._hooked:
            self._feed_hooks(chunk)
        if self._watch:
            self._check_expected()
        return chunk

    def _feed_hooks(self, chunk: bytes) -> None:
        for inspector in list(self._hooked):
            try:
                inspector.eat_chunk(chunk)
            except Exception as exc:
                if self._expected_format == inspector.NAME:
                    raise  # the format asked for cannot be read: the caller must know
                if not self._expected_format:  # else the other formats are not of interest
                    LOG.debug("Format inspector for %s failed, left out (%s)", inspector, exc)
                self._hooked.remove(inspector)

    def close(self) -> None:
        self._finish()
        if hasattr(self._source, "close"):
            self._source.close()

    def _finish(self) -> None:
        """The end, or a close before it.  A seekable file closed early is read at random
        (only its structures); a stream is judged on what arrived (a cut image is unsafe)."""
        self._finished = True
        reading = self._reading
        if reading.finished:
            return
        if _unread_file(self._source):
            reading.finish_from_file(self._source)
        else:
            reading.finish()

    def _check_expected(self) -> None:
        verdict = self._reading.says(str(self._expected_format))
        if verdict is None:
            return
        self._watch = False
        if not verdict:
            raise ImageFormatError(
                f"Content does not match expected format {self._expected_format!r}"
            )

    # -- the verdict ----------------------------------------------------------------------
    @property
    def formats(self) -> list[FileInspector] | None:
        """The inspectors of every format the content is, or None while undecided.

        A GPT/MBR disk is ``gpt``, a hybrid ISO ``[iso, gpt]``, a polyglot all its formats;
        content of no known format is ``[raw]`` (empty when raw is not allowed).
        """
        names = self._reading.names()
        if names is None:
            return None
        by_name = {inspector.NAME: inspector for inspector in self._inspectors}
        matches = [by_name[name] for name in names if name in by_name]
        if not matches and names == ["raw"]:
            return []
        return matches

    @property
    def format(self) -> FileInspector | None:
        """The one format of the content, or None while undecided.

        :raises ImageFormatError: several formats (a polyglot), or none that is allowed.
        """
        matches = self.formats
        if matches is None:
            return None
        names = self._reading.names() or []
        if len(names) > 1:
            raise ImageFormatError("Multiple formats detected: {}".format(",".join(names)))
        if not matches:
            raise ImageFormatError("Content does not match any allowed format")
        return matches[0]


def _unread_file(source: Any) -> bool:
    """True for a seekable file (a real one, with a descriptor) not read to its end."""
    if not isinstance(source, io.IOBase):
        return False
    try:
        return source.seekable() and source.tell() < os.fstat(source.fileno()).st_size
    except (OSError, ValueError):
        return False


_BASE_EAT = FileInspector.eat_chunk

ALL_FORMATS: dict[str, type[FileInspector]] = {
    "raw": RawFileInspector,
    "qcow2": QcowInspector,
    "vhd": VHDInspector,
    "vhdx": VHDXInspector,
    "vmdk": VMDKInspector,
    "vdi": VDIInspector,
    "qed": QEDInspector,
    "iso": ISOInspector,
    "gpt": GPTInspector,
    "luks": LUKSInspector,
}


def get_inspector(format_name: str) -> type[FileInspector] | None:
    """The inspector class for a format name, or None."""
    return ALL_FORMATS.get(format_name)


def detect_file_format(
    filename: str, tracing: bool = False, params: dict[str, str] | None = None
) -> FileInspector | None:
    """Inspect a file and return the inspector of its format.

    :raises ImageFormatError: if the content is several formats at once.
    """
    with open(filename, "rb") as f:
        wrapper = InspectWrapper(f, tracing=tracing, params=params)
        wrapper.close()  # a file is read at random: only the structures it has
    return wrapper.format
