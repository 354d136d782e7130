"""The OVF's file references and the manifest's digests, checked against the members."""

from __future__ import annotations

import functools
import hashlib
from xml.etree.ElementTree import Element

from ...source import Source, StreamGap
from ..base import Context
from .codes import (
    CHUNKED,
    HEADER_ONLY_LIMIT,
    HREF_OUTSIDE,
    MANIFEST_BAD,
    MANIFEST_MISMATCH,
    MANIFEST_UNLISTED,
    MANIFEST_UNVERIFIED,
    MISSING_FILE,
    SIZE_MISMATCH,
)
from .layout import (
    HEADER_ONLY_MANIFEST_BYTES,
    MANIFEST_LINE,
    MAX_MANIFEST_BYTES,
    MAX_OVF_ITEMS,
    REGULAR_TYPES,
    STREAM_DIGEST,
)
from .ovf import _int, attr, children
from .section import Manifest, OvaFile
from .tar import RawMember, Walk, escapes


def _files(
    ctx: Context, envelope: Element | None, by_name: dict[str, RawMember]
) -> dict[str, OvaFile]:
    files: dict[str, OvaFile] = {}
    for references in children(envelope, "References"):
        for node in children(references, "File")[:MAX_OVF_ITEMS]:
            href = attr(node, "href") or ""
            file_id = attr(node, "id")
            size = _int(attr(node, "size"))
            chunk = _int(attr(node, "chunkSize"))
            if "://" in href or escapes(href):
                ctx.findings.add(HREF_OUTSIDE, f"file {file_id!r} references {href!r}")
            if chunk:
                ctx.findings.add(CHUNKED, f"{href!r} is split into {chunk}-byte chunks")
            member = by_name.get(href)
            present = member is not None or (
                bool(chunk) and any(name.startswith(href + ".") for name in by_name)
            )
            if not present:
                ctx.findings.add(MISSING_FILE, f"{href!r} is referenced but not in the archive")
            elif member is not None and size is not None and size != member.size:
                ctx.findings.add(
                    SIZE_MISMATCH, f"{href!r}: ovf:size {size}, member holds {member.size}"
                )
            files[file_id or href] = OvaFile(href, size, present, file_id, chunk)
    return files


def _manifest(ctx: Context, walk: Walk) -> Manifest:
    members, by_name, mf = walk.members, walk.by_name, walk.manifest
    if mf is None:
        return Manifest(None, None, None, ())  # a stream's rehearsals hashed ahead all the same
    if not ctx.deep and mf.size > HEADER_ONLY_MANIFEST_BYTES:
        ctx.findings.add(
            HEADER_ONLY_LIMIT, f"{mf.name!r} ({mf.size} bytes) is not read header-only"
        )
        return Manifest(mf.name, None, None, ())
    if mf.size > MAX_MANIFEST_BYTES:
        ctx.findings.add(MANIFEST_BAD, f"manifest of {mf.size} bytes is not read")
        return Manifest(mf.name, None, None, ())
    digests, algorithm = _manifest_lines(ctx, ctx.source.read_at(mf.offset, mf.size))
    if not ctx.deep:
        ctx.findings.add(MANIFEST_UNVERIFIED, "header-only mode: digests not computed")
        return Manifest(mf.name, algorithm, None, ())
    mismatches = []
    verified = True
    for name, (algo, expected) in digests.items():
        member = by_name.get(name)
        if member is None:
            mismatches.append(name)
            ctx.findings.add(MANIFEST_MISMATCH, f"manifest lists {name!r}, not in the archive")
            continue
        try:
            actual = _digest(ctx.source, member, algo)
        except StreamGap:
            ctx.findings.add(MANIFEST_UNVERIFIED, f"{name!r} was not kept from the stream")
            verified = False
            continue
        if actual != expected:
            mismatches.append(name)
            ctx.findings.add(MANIFEST_MISMATCH, f"{algo}({name}) is {actual}, not {expected}")
    for member in members:
        listable = member.typeflag in REGULAR_TYPES and member is not mf
        if listable and member.name not in digests and not member.name.endswith(".cert"):
            ctx.findings.add(MANIFEST_UNLISTED, f"{member.name!r} is not in the manifest")
    return Manifest(mf.name, algorithm, verified and not mismatches, tuple(mismatches))


def rehearse_manifest(ctx: Context, walk: Walk) -> None:
    """What a stream's rehearsal needs of the manifest: the digests of the members it may
    name started before their bytes go by, each member looked at once over all the runs.
    Until the manifest is seen that is every member (:func:`_hash_ahead`); once it has
    arrived, the members it lists (parsed once, kept in Source.memo)."""
    src, mf = ctx.source, walk.manifest
    if mf is None:
        if ctx.deep:
            _hash_ahead(src, walk.members)
        return
    if mf.size > (MAX_MANIFEST_BYTES if ctx.deep else HEADER_ONLY_MANIFEST_BYTES):
        return  # the final parse does not read it either
    memo = src.memo(("ova-manifest", mf.offset))
    digests: dict[str, tuple[str, str]] | None = memo.get("digests")
    if digests is None:
        data = src.read_at(mf.offset, mf.size)
        if src.pending(mf.offset, mf.size):
            return  # read again once it has all arrived
        digests = memo["digests"] = _manifest_lines(ctx, data)[0]
    if not ctx.deep:
        return  # header-only: read, digests not computed
    done = memo.get("members", 0)
    memo["members"] = len(walk.members)
    for member in walk.members[done:]:
        listed = digests.get(member.name)
        if listed is not None:
            _digest(src, member, listed[0])


def _hash_ahead(src: Source, members: list[RawMember]) -> None:
    """A stream whose manifest may come last: hash members as they pass, before it is known.

    SHA-256 only (what ovftool and VirtualBox write); a later manifest in another algorithm
    is reported unverified rather than paying for three digests of every byte.  A rehearsal
    starts only the digests of members it has not seen before.
    """
    memo = src.memo("ova-hash-ahead")
    done = memo.get("members", 0)
    memo["members"] = len(members)
    for member in members[done:]:
        if member.typeflag in REGULAR_TYPES and not member.name.lower().endswith(".ovf"):
            _digest(src, member, STREAM_DIGEST)


def _manifest_lines(ctx: Context, data: bytes) -> tuple[dict[str, tuple[str, str]], str | None]:
    digests: dict[str, tuple[str, str]] = {}
    algorithms = set()
    for line in data.splitlines():
        if not line.strip():
            continue
        match = MANIFEST_LINE.match(line)
        if match is None:
            ctx.findings.add(MANIFEST_BAD, f"unreadable manifest line {line[:80]!r}")
            continue
        algo = match.group(1).decode()
        name = match.group(2).decode("utf-8", errors="replace").strip()
        digests[name] = (algo, match.group(3).decode().lower())
        algorithms.add(algo)
    algorithm = ",".join(sorted(algorithms)) if algorithms else None
    return digests, algorithm


class _Hasher:
    """A scan consumer computing one digest."""

    def __init__(self, algorithm: str) -> None:
        self.hash = hashlib.new(algorithm.lower())

    def feed(self, offset: int, data: bytes) -> None:
        self.hash.update(data)


def _digest(src: Source, member: RawMember, algorithm: str) -> str:
    """The member's digest, computed as its bytes go by (a single pass on streams too)."""
    key = ("digest", member.offset, algorithm)
    make = functools.partial(_Hasher, algorithm)
    hasher = src.scan(key, [(member.offset, member.size)], make, wait=False)
    return hasher.hash.hexdigest()
