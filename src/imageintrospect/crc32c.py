"""CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries.

Python's standard library only has the zlib/IEEE CRC-32 (``zlib.crc32``, ``binascii.crc32``),
whose polynomial differs.  The packages that provide CRC-32C are C extensions or unmaintained
pure-Python copies; neither is worth a dependency for the ~140 KiB a VHDX introspection
checksums.  So this is a small table-driven implementation (reflected polynomial
``0x82F63B78``, initial value and final XOR ``0xFFFFFFFF``: the parameters of iSCSI, ext4 and
the VHDX specification).  The C core, when it lands, brings its own.

VHDX checksums cover fixed-size blocks (a 4 KiB header, a 64 KiB region table) that are
mostly zero padding after a short structure.  A run of zero bytes changes the CRC register
linearly, so trailing zeros are skipped with precomputed "advance over 2^k zero bytes"
operators instead of a byte loop: the common case costs microseconds, not milliseconds.
"""

from __future__ import annotations

POLYNOMIAL = 0x82F63B78
_MASK = 0xFFFFFFFF


def _byte_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        value = index
        for _ in range(8):
            value = (value >> 1) ^ POLYNOMIAL if value & 1 else value >> 1
        table.append(value)
    return tuple(table)


_TABLE = _byte_table()

# An operator is the image of each of the 32 register bits (a 32x32 matrix over GF(2), by
# columns).  _ZERO_RUNS[k] advances the register over 2**k zero bytes.
_Operator = tuple[int, ...]
_ZERO_RUN_LEVELS = 25  # up to 16 MiB of zeros in one operator application


def _apply(operator: _Operator, register: int) -> int:
    result = 0
    bit = 0
    while register:
        if register & 1:
            result ^= operator[bit]
        register >>= 1
        bit += 1
    return result


def _zero_run_operators() -> tuple[_Operator, ...]:
    # One zero byte: the register shifts right by 8 and the table folds the low byte back in.
    one_byte = tuple(_TABLE[(1 << bit) & 0xFF] ^ ((1 << bit) >> 8) for bit in range(32))
    operators = [one_byte]
    for _ in range(1, _ZERO_RUN_LEVELS):
        previous = operators[-1]
        operators.append(tuple(_apply(previous, column) for column in previous))
    return tuple(operators)


_ZERO_RUNS = _zero_run_operators()


def _skip_zeros(register: int, count: int) -> int:
    """Advance the register over ``count`` zero bytes, one operator per set bit of ``count``."""
    largest = _ZERO_RUN_LEVELS - 1
    while count >> largest:  # only for runs beyond what the largest operator covers
        register = _apply(_ZERO_RUNS[largest], register)
        count -= 1 << largest
    level = 0
    while count:
        if count & 1:
            register = _apply(_ZERO_RUNS[level], register)
        count >>= 1
        level += 1
    return register


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The CRC-32C of ``data``; pass a previous result as ``crc`` to continue over more data.

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    view = bytes(data)
    body = view.rstrip(b"\0")
    register = (crc ^ _MASK) & _MASK
    table = _TABLE
    for byte in body:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    register = _skip_zeros(register, len(view) - len(body))
    return register ^ _MASK


def crc32c_bytewise(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The same CRC computed one byte at a time, with no zero-run shortcut (a test oracle)."""
    register = (crc ^ _MASK) & _MASK
    for byte in bytes(data):
        register = _TABLE[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register ^ _MASK
