"""One place that turns bytes into construct values.

Like pyelftools' ``struct_parse``, every construct error becomes an :class:`InvalidImage`
naming the structure that failed, so no construct exception reaches a caller.  Schemas are
used interpreted (never ``.compile()``d): the input is hostile and the interpreter is the
better-reviewed path.
"""

from __future__ import annotations

from typing import Any

import construct

from .errors import InvalidImage


def parse_struct(schema: construct.Construct, data: bytes, what: str) -> Any:
    """Parse ``data`` with ``schema``; raise :class:`InvalidImage` naming ``what`` on failure."""
    try:
        return schema.parse(data)
    except construct.ConstructError as exc:
        raise InvalidImage(f"{what}: cannot parse ({type(exc).__name__})") from exc


def cstring(raw: bytes, encoding: str = "utf-8") -> str:
    """Decode a NUL-padded byte field; undecodable bytes are replaced, never raised."""
    return raw.split(b"\0", 1)[0].decode(encoding, errors="replace")
