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
from collections.abc import Callable, Iterator
from typing import IO, Any

from ._reading import Reading, Violation

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
        self._reading = Reading()
        self._initialize()
        if not self._safety_checks:
            raise RuntimeError("All inspectors must define at least one safety check")

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

    # -- feeding --------------------------------------------------------------------------
    def eat_chunk(self, chunk: bytes) -> None:
        """Present the next chunk of the image."""
        self._reading.eat(chunk)

    def finish(self) -> None:
        """The whole image has been presented."""
        self._reading.finish()

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
    """A LUKS container.  Its payload is never decrypted: ``inner_format`` stays None."""

    NAME = "luks"

    def _initialize(self) -> None:
        self.add_safety_check(self._finding_check("version"))
        self.add_safety_check(SafetyCheck("passphrase", self.check_passphrase))

    def check_passphrase(self) -> None:
        """A passphrase asks for the payload to be proven decryptable, which this library
        never does (it does not decrypt guest data): fail closed rather than pretend."""
        if self._params.get("luks_passphrase"):
            raise SafetyViolation("Passphrase cannot be verified: the payload is not decrypted")


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
                self._inspectors.append(inspector)
        # The expected format is watched until the content is known to be it or not.
        self._watch = expected_format in ALL_FORMATS
        self._finished = False

    # -- the stream -------------------------------------------------------------------------
    def read(self, size: int = -1) -> bytes:
        chunk: bytes = self._source.read(size)
        if chunk:
            self._reading.eat(chunk)
        elif size != 0:
            self._reading.finish()  # an empty read is the end of the stream
        if self._watch:
            self._check_expected()
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            chunk: bytes = next(self._source)
        except StopIteration:
            self._reading.finish()
            if self._watch:
                self._check_expected()
            raise
        self._reading.eat(chunk)
        if self._watch:
            self._check_expected()
        return chunk

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
