"""FAST 1.1 transfer-encoding primitives (spec section 10): stop-bit integers, nullable
integers, ASCII strings, byte vectors and presence maps.

Contract:

* ``read_*(data, pos, ...)`` decode one entity starting at ``data[pos]`` (``data`` is
  ``bytes``) and return ``(value, next_pos)``.  Nullable readers return ``None`` for NULL.
  Running off the end of ``data`` raises ``IndexError`` (callers turn it into a
  ``FastError``); a malformed entity raises ``FastError`` with its FAST code: ``D2`` an
  integer out of its type's range, ``R6`` an overlong integer, ``R7`` an overlong presence
  map, ``R9`` an overlong string.  With ``strict=False`` the reportable (``R``) checks
  are skipped, as the spec allows.
* ``write_*(out, value)`` append one entity to the ``bytearray`` ``out``.  They assume
  the value was validated (type and range); ``write_ascii`` alone validates, since it
  must reject non-ASCII text and unrepresentable leading NULs.
* Presence maps are handled as Python ints holding bit *k* of the map (k = 0 is the first
  bit in the stream) at bit position *k*, so a field's bit tests as ``pm & (1 << k)``.
* The 256-entry tables decode a one-byte entity in a single lookup and hold ``MULTI`` for
  a byte without the stop bit (the entity continues); the compiled codecs use them for
  their fast paths.

The module has no state; everything here is a pure function or an immutable table.
"""

from __future__ import annotations

from .errors import FastError

__all__ = [
    "MULTI", "U_TAB", "NU_TAB", "S_TAB", "NS_TAB", "CHR_TAB", "SHI_TAB", "U2", "S2",
    "REV7", "PMAP1", "PMAP2", "ascii_entity", "ascii_entity_null",
    "INT32_MIN", "INT32_MAX", "UINT32_MAX", "INT64_MIN", "INT64_MAX", "UINT64_MAX",
    "read_uint", "read_uint_null", "read_int", "read_int_null",
    "read_ascii", "read_ascii_null", "read_bytes", "read_bytes_null", "read_pmap",
    "write_uint", "write_uint_null", "write_int", "write_int_null",
    "write_ascii", "write_ascii_null", "write_bytes", "write_bytes_null", "encode_pmap",
]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
UINT32_MAX = (1 << 32) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

#: The longest integer entity accepted: the nullable uInt64 maximum (2**64) needs ten
#: bytes; with ``strict=False`` (overlong allowed) a little slack is tolerated.
_MAX_INT_BYTES = 10
_MAX_LENIENT_INT_BYTES = 20


class _Multi:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MULTI"


MULTI = _Multi()


def _signed7(b: int) -> int:
    return (b & 0x3F) - (b & 0x40)


U_TAB = tuple(b & 0x7F if b & 0x80 else MULTI for b in range(256))
NU_TAB = tuple(
    (None if b == 0x80 else (b & 0x7F) - 1) if b & 0x80 else MULTI for b in range(256)
)
S_TAB = tuple(_signed7(b) if b & 0x80 else MULTI for b in range(256))
NS_TAB = tuple(
    (None if b == 0x80 else (_signed7(b) - 1 if _signed7(b) > 0 else _signed7(b)))
    if b & 0x80 else MULTI
    for b in range(256)
)
#: one-character strings for single-byte ASCII entities (bytes 0x81..0xFF)
CHR_TAB = tuple(chr(b & 0x7F) for b in range(256))
#: bit-reversal of 7-bit groups: stream order (first bit = MSB) <-> int order (first = bit 0)
REV7 = tuple(int(f"{x:07b}"[::-1], 2) for x in range(128))
#: encoded one-byte presence maps, indexed by the int form (< 128)
PMAP1 = tuple(bytes((REV7[x] | 0x80,)) for x in range(128))
#: encoded presence maps of up to two bytes, indexed by the int form (< 16384)
PMAP2 = PMAP1 + tuple(bytes((REV7[x & 0x7F], REV7[x >> 7] | 0x80)) for x in range(128, 16384))
_CLEAR_HIGH = bytes(b & 0x7F for b in range(256))
#: sign-extended value of a first byte's seven data bits (for two-byte signed entities)
SHI_TAB = tuple((b & 0x3F) - (b & 0x40) for b in range(256))
#: two-byte stop-bit encodings: U2[v] for 0 <= v < 16384 (only v >= 128 needs two bytes),
#: S2[v + 8192] for -8192 <= v < 8192 (only values outside [-64, 63] need two)
U2 = tuple(bytes((v >> 7, (v & 0x7F) | 0x80)) for v in range(16384))
S2 = tuple(bytes(((v >> 7) & 0x7F, (v & 0x7F) | 0x80)) for v in range(-8192, 8192))
#: 14-bit groups without a stop bit, for longer entities
_G2 = tuple(bytes((v >> 7, v & 0x7F)) for v in range(16384))


# ---------------------------------------------------------------------------- integers


def _too_long(strict: bool) -> FastError:
    return FastError("integer entity too long for any FAST integer type", "D2")


def read_uint(data: bytes, pos: int, hi: int = UINT64_MAX, strict: bool = True):
    """Non-nullable unsigned integer in ``[0, hi]``."""
    b = data[pos]
    if b & 0x80:
        return b & 0x7F, pos + 1
    if b == 0 and strict:
        raise FastError("overlong unsigned integer", "R6")
    v = b
    j = pos + 1
    limit = pos + (_MAX_INT_BYTES if strict else _MAX_LENIENT_INT_BYTES) - 1
    b = data[j]
    while b < 0x80:
        if j >= limit:
            raise _too_long(strict)
        v = (v << 7) | b
        j += 1
        b = data[j]
    v = (v << 7) | (b & 0x7F)
    if v > hi:
        raise FastError(f"unsigned integer {v} exceeds {hi}", "D2")
    return v, j + 1


def read_uint_null(data: bytes, pos: int, hi: int = UINT64_MAX, strict: bool = True):
    """Nullable unsigned integer: NULL -> None, else the value in ``[0, hi]``."""
    v, pos = read_uint(data, pos, hi + 1, strict)
    return (v - 1 if v else None), pos


def read_int(data: bytes, pos: int, lo: int = INT64_MIN, hi: int = INT64_MAX,
             strict: bool = True):
    """Non-nullable signed (two's complement) integer in ``[lo, hi]``."""
    b = data[pos]
    if b & 0x80:
        return (b & 0x3F) - (b & 0x40), pos + 1
    v = (b & 0x3F) - (b & 0x40)
    j = pos + 1
    nxt = data[j]
    if strict and (b == 0x00 or b == 0x7F) and (nxt & 0x40) == (b & 0x40):
        # the first byte only repeats the sign of the next one
        raise FastError("overlong signed integer", "R6")
    limit = pos + (_MAX_INT_BYTES if strict else _MAX_LENIENT_INT_BYTES) - 1
    b = nxt
    while b < 0x80:
        if j >= limit:
            raise _too_long(strict)
        v = (v << 7) | b
        j += 1
        b = data[j]
    v = (v << 7) | (b & 0x7F)
    if v < lo or v > hi:
        raise FastError(f"signed integer {v} outside [{lo}, {hi}]", "D2")
    return v, j + 1


def read_int_null(data: bytes, pos: int, lo: int = INT64_MIN, hi: int = INT64_MAX,
                  strict: bool = True):
    """Nullable signed integer: NULL -> None; non-negative values are sent plus one."""
    v, pos = read_int(data, pos, lo, hi + 1, strict)
    if v > 0:
        return v - 1, pos
    if v == 0:
        return None, pos
    return v, pos


def write_uint(out: bytearray, v: int) -> None:
    """Append a non-nullable unsigned integer (``v >= 0``)."""
    if v < 0x80:
        out.append(v | 0x80)
    elif v < 0x4000:
        out += U2[v]
    elif v < 0x200000:
        out.append(v >> 14)
        out += U2[v & 0x3FFF]
    elif v < 0x10000000:
        out += _G2[v >> 14]
        out += U2[v & 0x3FFF]
    elif v < 0x800000000:
        out.append(v >> 28)
        out += _G2[(v >> 14) & 0x3FFF]
        out += U2[v & 0x3FFF]
    elif v < 0x40000000000:
        out += _G2[v >> 28]
        out += _G2[(v >> 14) & 0x3FFF]
        out += U2[v & 0x3FFF]
    else:
        s = 7 * ((v.bit_length() - 1) // 7)
        while s:
            out.append((v >> s) & 0x7F)
            s -= 7
        out.append((v & 0x7F) | 0x80)


def write_uint_null(out: bytearray, v: int | None) -> None:
    """Append a nullable unsigned integer (``None`` -> NULL)."""
    if v is None:
        out.append(0x80)
    else:
        write_uint(out, v + 1)


def write_int(out: bytearray, v: int) -> None:
    """Append a non-nullable signed integer (minimal two's complement, sign bit first)."""
    if -64 <= v < 64:
        out.append((v & 0x7F) | 0x80)
        return
    if -8192 <= v < 8192:
        out += S2[v + 8192]
        return
    s = 7 * (((v if v >= 0 else ~v).bit_length()) // 7)
    while s:
        out.append((v >> s) & 0x7F)
        s -= 7
    out.append((v & 0x7F) | 0x80)


def write_int_null(out: bytearray, v: int | None) -> None:
    """Append a nullable signed integer (``None`` -> NULL, ``v >= 0`` sent as ``v + 1``)."""
    if v is None:
        out.append(0x80)
    elif v >= 0:
        write_int(out, v + 1)
    else:
        write_int(out, v)


# ------------------------------------------------------------------------- ASCII strings


def _ascii_body(data: bytes, pos: int):
    j = pos
    while data[j] < 0x80:
        j += 1
    return data[pos:j].decode("ascii") + CHR_TAB[data[j]], j + 1


def read_ascii(data: bytes, pos: int, strict: bool = True):
    """Non-nullable ASCII string: 0x80 is "", 0x00 0x80 is "\\0" (spec 10.6.3)."""
    b = data[pos]
    if b > 0x80:
        return CHR_TAB[b], pos + 1
    if b == 0x80:
        return "", pos + 1
    if b == 0:
        if data[pos + 1] == 0x80:
            return "\x00", pos + 2
        if strict:
            raise FastError("overlong ASCII string (zero preamble)", "R9")
        return _ascii_body(data, pos + 1)
    return _ascii_body(data, pos)


def read_ascii_null(data: bytes, pos: int, strict: bool = True):
    """Nullable ASCII string: 0x80 is NULL, 0x00 0x80 is "", 0x00 0x00 0x80 is "\\0"."""
    b = data[pos]
    if b > 0x80:
        return CHR_TAB[b], pos + 1
    if b == 0x80:
        return None, pos + 1
    if b == 0:
        b2 = data[pos + 1]
        if b2 == 0x80:
            return "", pos + 2
        if b2 == 0 and data[pos + 2] == 0x80:
            return "\x00", pos + 3
        if strict:
            raise FastError("overlong ASCII string (zero preamble)", "R9")
        return read_ascii(data, pos + 1, False)
    return _ascii_body(data, pos)


def _ascii_bytes(s: str) -> bytes:
    try:
        b = s.encode("ascii")
    except UnicodeEncodeError:
        raise FastError(f"non-ASCII character in ASCII string {s!r}") from None
    except AttributeError:
        raise FastError(f"expected str for an ASCII string, got {type(s).__name__}") from None
    if b[:1] == b"\x00" and len(b) > 1:
        raise FastError(f"ASCII string {s!r} starts with NUL: not representable", "R9")
    return b


_ASCII_CACHE: dict = {}
_ASCII_NULL_CACHE: dict = {}
_CACHE_LIMIT = 1 << 16


def ascii_entity(s: str) -> bytes:
    """The non-nullable encoding of ``s``, memoised (strings repeat: symbols, sessions)."""
    b = _ASCII_CACHE.get(s)
    if b is None:
        out = bytearray()
        write_ascii(out, s)
        b = bytes(out)
        if len(_ASCII_CACHE) >= _CACHE_LIMIT:
            _ASCII_CACHE.clear()
        _ASCII_CACHE[s] = b
    return b


def ascii_entity_null(s: str) -> bytes:
    """The nullable encoding of ``s`` (not None), memoised."""
    b = _ASCII_NULL_CACHE.get(s)
    if b is None:
        out = bytearray()
        write_ascii_null(out, s)
        b = bytes(out)
        if len(_ASCII_NULL_CACHE) >= _CACHE_LIMIT:
            _ASCII_NULL_CACHE.clear()
        _ASCII_NULL_CACHE[s] = b
    return b


def write_ascii(out: bytearray, s: str) -> None:
    """Append a non-nullable ASCII string."""
    b = _ascii_bytes(s)
    if not b:
        out.append(0x80)
    elif b == b"\x00":
        out += b"\x00\x80"
    else:
        out += b
        out[-1] |= 0x80


def write_ascii_null(out: bytearray, s: str | None) -> None:
    """Append a nullable ASCII string (``None`` -> NULL)."""
    if s is None:
        out.append(0x80)
        return
    b = _ascii_bytes(s)
    if not b:
        out += b"\x00\x80"
    elif b == b"\x00":
        out += b"\x00\x00\x80"
    else:
        out += b
        out[-1] |= 0x80


# -------------------------------------------------------------------------- byte vectors


def _take(data: bytes, pos: int, n: int):
    end = pos + n
    if end > len(data):
        raise IndexError("byte vector runs past the end of the data")
    return data[pos:end], end


def read_bytes(data: bytes, pos: int, strict: bool = True):
    """Non-nullable byte vector: uInt32 length then the raw bytes."""
    n, pos = read_uint(data, pos, UINT32_MAX, strict)
    return _take(data, pos, n)


def read_bytes_null(data: bytes, pos: int, strict: bool = True):
    """Nullable byte vector: NULL length -> None."""
    n, pos = read_uint_null(data, pos, UINT32_MAX, strict)
    if n is None:
        return None, pos
    return _take(data, pos, n)


def write_bytes(out: bytearray, b: bytes) -> None:
    """Append a non-nullable byte vector."""
    write_uint(out, len(b))
    out += b


def write_bytes_null(out: bytearray, b: bytes | None) -> None:
    """Append a nullable byte vector (``None`` -> NULL)."""
    if b is None:
        out.append(0x80)
    else:
        write_uint(out, len(b) + 1)
        out += b


# ------------------------------------------------------------------------- presence maps


def read_pmap(data: bytes, pos: int, strict: bool = True):
    """Presence map as an int (stream bit k at int bit k)."""
    pm = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        pm |= REV7[b & 0x7F] << shift
        shift += 7
        if b & 0x80:
            break
    if strict and shift > 7 and b == 0x80:
        raise FastError("overlong presence map (ends in seven zero bits)", "R7")
    return pm, pos


def encode_pmap(pm: int) -> bytes:
    """Stop-bit encode a presence map given in int form; trailing zero bits are dropped."""
    if pm < 0x80:
        return PMAP1[pm]
    out = bytearray()
    while pm >= 0x80:
        out.append(REV7[pm & 0x7F])
        pm >>= 7
    out.append(REV7[pm] | 0x80)
    return bytes(out)
