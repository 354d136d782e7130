"""Telling a VMDK from other images: the binary magics and the text-descriptor tests."""

from __future__ import annotations

import re

from ..base import Probe
from .layout import COWD_MAGIC, QEMU_PROBE_BYTES, SESPARSE_MAGIC, SPARSE_MAGIC

# --- probe ---------------------------------------------------------------------------------

_TEXT_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
_DESCRIPTOR_COMMENT = re.compile(rb"(?im)^(?:\xef\xbb\xbf)?[ \t]*#[ \t]*disk[ \t]*descriptorfile")
_CREATE_TYPE_LINE = re.compile(rb"(?im)^[ \t]*createType[ \t]*=")
_EXTENT_LINE_START = re.compile(rb"(?im)^[ \t]*(?:RW|RDONLY|NOACCESS)[ \t]+\d+[ \t]+[A-Z]+")
_NOT_NUL = re.compile(rb"[^\0]")
# The lines qemu's probe accepts first (built once: every image is probed).
_QEMU_VERSION_LINES = tuple(b"version=%d%s" % (v, nl) for v in (1, 2, 3) for nl in (b"\n", b"\r\n"))


def probe(probe: Probe) -> bool:
    head = probe.head
    if head[:4] in (SPARSE_MAGIC, COWD_MAGIC) or head[:8] == SESPARSE_MAGIC:
        return True
    return qemu_probes_descriptor(head[:QEMU_PROBE_BYTES]) or looks_like_descriptor(head)


def qemu_probes_descriptor(buf: bytes) -> bool:
    """qemu's own test for a text descriptor: comments or blank lines, then ``version=N``."""
    pos, end = 0, len(buf)
    while pos < end:
        char = buf[pos : pos + 1]
        if char == b"#":
            newline = buf.find(b"\n", pos)
            pos = end if newline < 0 else newline + 1
            continue
        if char == b" ":
            while pos < end and buf[pos : pos + 1] == b" ":
                pos += 1
            if buf[pos : pos + 1] == b"\r":
                pos += 1
            if pos >= end or buf[pos : pos + 1] != b"\n":
                return False
            pos += 1
            continue
        return buf.startswith(_QEMU_VERSION_LINES, pos)
    return False


def looks_like_descriptor(head: bytes) -> bool:
    """A text file (NUL padding allowed at its end) that reads as a VMDK descriptor.

    Decided from the given bytes alone (the first 64 KiB), so a descriptor is recognised the
    same way however the file was read.
    """
    nul = head.find(b"\0")
    text = head if nul < 0 else head[:nul]
    # Cheapest test first: every binary image is refused here without copying its head.
    if not text.strip() or _TEXT_BYTES.search(text):
        return False
    if nul >= 0 and _NOT_NUL.search(head, nul):  # only NUL padding may follow the text
        return False
    if _DESCRIPTOR_COMMENT.search(text[:4096]):
        return True
    return bool(_CREATE_TYPE_LINE.search(text) and _EXTENT_LINE_START.search(text))
