"""LUKS1 and LUKS2 binary headers (the LUKS1 and LUKS2 on-disk format specifications).

The documented layout: scripts/gen_layouts.py derives ``imageintrospect._layouts`` from
the schemas here (run it after any change; docs/hacking.md).
"""

from __future__ import annotations

import construct as c

# Constants the format module also defines (tests/test_layouts.py checks they agree):
# these modules import nothing of the package, so they load even when the generated
# module is out of date.
MAGIC = b"LUKS\xba\xbe"

KEY_SLOT_V1 = c.Struct(
    "state" / c.Int32ub,
    "iterations" / c.Int32ub,
    "salt" / c.Bytes(32),
    "key_material_offset" / c.Int32ub,  # in sectors
    "stripes" / c.Int32ub,
)

HEADER_V1 = c.Struct(
    "magic" / c.Const(MAGIC),
    "version" / c.Int16ub,
    "cipher_name" / c.Bytes(32),
    "cipher_mode" / c.Bytes(32),
    "hash_spec" / c.Bytes(32),
    "payload_offset" / c.Int32ub,  # in sectors
    "key_bytes" / c.Int32ub,
    "mk_digest" / c.Bytes(20),
    "mk_digest_salt" / c.Bytes(32),
    "mk_digest_iterations" / c.Int32ub,
    "uuid" / c.Bytes(40),
    "key_slots" / c.Array(8, KEY_SLOT_V1),
)

HEADER_V2 = c.Struct(
    "magic" / c.Const(MAGIC),
    "version" / c.Int16ub,
    "header_size" / c.Int64ub,  # binary header + JSON area
    "seqid" / c.Int64ub,
    "label" / c.Bytes(48),
    "checksum_alg" / c.Bytes(32),
    "salt" / c.Bytes(64),
    "uuid" / c.Bytes(40),
    "subsystem" / c.Bytes(48),
    "header_offset" / c.Int64ub,
    "padding" / c.Bytes(184),
    "checksum" / c.Bytes(64),
)
