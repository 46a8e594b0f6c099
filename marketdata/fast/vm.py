"""Compile templates into the instruction program of the C codec (``_fastvm.c``).

Contract:

* ``available()`` is True when the compiled extension ``marketdata.fast._fastvm`` imports
  and speaks this module's program version.
* ``compile_program(templates)`` returns the program: plain tuples, ints, strings and
  bytes, the same for every codec of a template set.  Static ``templateRef``s are
  inlined; presence-map bits and dictionary slots are resolved here, with the same rules
  (``_codegen.bits``, ``_codegen.slot``) as the generated-Python codec, so the two
  implementations agree bit for bit.
* ``make_vm(templates, ...)`` returns a ``_fastvm.VM`` (``encode``, ``encode_datagram``,
  ``decode``, ``decode_datagram``, ``reset``) with the exact contract of
  ``Encoder``/``Decoder`` (see encoder.py and decoder.py); ``None`` when the extension
  is not available or rejects the program (e.g. groups nested deeper than it allows),
  so that callers can fall back to the generated Python.

Program layout (``_fastvm.c`` validates it when a VM is built)::

    program     = (PROGRAM_VERSION, templates, slot_kinds)
    template    = (id, name, Template, nbits, segment, used_slots)
    segment     = (nbits, instructions)
    instruction = (kind, op, itype, optional, bit, slot, key, name, init, extra)

``bit``/``slot`` are -1 when the field has none; ``key`` is the field name (None for a
decimal's exponent/mantissa part and a sequence length, which are not looked up);
``init`` is the typed initial value; ``extra`` is ``(exponent, mantissa)`` for a decimal
with individual operators, ``(length, segment, reads_bytes)`` for a sequence, the
element segment for a group.  ``used_slots`` lists the slots a template touches: the
per-datagram path resets only those.
"""

from __future__ import annotations

from decimal import Decimal

from ._codegen import bits, expand, op_bits, slot
from .dictionary import Layout
from .errors import FastError
from .templates import (
    ByteVectorField, DecimalField, GroupField, IntegerField, SequenceField, StringField,
    Templates,
)

__all__ = ["available", "compile_program", "make_vm", "PROGRAM_VERSION"]

PROGRAM_VERSION = 1

K_INT, K_DECIMAL, K_DECIMAL_PARTS, K_ASCII, K_UNICODE, K_BYTES, K_SEQUENCE, K_GROUP = range(8)
OPS = {"none": 0, "constant": 1, "default": 2, "copy": 3, "increment": 4, "delta": 5,
       "tail": 6}
ITYPES = {"uInt32": 0, "int32": 1, "uInt64": 2, "int64": 3}
SLOT_KINDS = {"tid": 0, "int": 1, "decimal": 2, "ascii": 3, "unicode": 4, "bytes": 5}

try:
    from . import _fastvm
except ImportError:  # not built: the generated Python is used
    _fastvm = None


def available() -> bool:
    return _fastvm is not None and getattr(_fastvm, "PROGRAM_VERSION", None) == PROGRAM_VERSION


def _reads_bytes(f) -> bool:
    """True when a field always consumes at least one byte of the stream."""
    if isinstance(f, (IntegerField, StringField, ByteVectorField)):
        return f.operator.kind in ("none", "delta")
    if isinstance(f, DecimalField):
        if f.individual:
            return f.exponent.kind in ("none", "delta")
        return f.operator.kind in ("none", "delta")
    if isinstance(f, SequenceField):
        return f.length.operator.kind in ("none", "delta")
    return False


class _Compiler:
    def __init__(self, templates: Templates) -> None:
        self.templates = templates
        self.layout = Layout()
        self.used: set[int] = set()

    def slot(self, op, key: str, kind: str, tname: str, atype) -> int:
        if op.kind in ("none", "constant", "default"):
            return -1
        k = slot(self.layout, op, key, kind, tname, atype)
        self.used.add(k)
        return k

    def integer(self, op, itype: str, optional: bool, bit: int, key, name: str, slot_key: str,
                tname: str, atype) -> tuple:
        return (K_INT, OPS[op.kind], ITYPES[itype], int(optional),
                bit if op_bits(op, optional) else -1,
                self.slot(op, slot_key, "int", tname, atype), key, name, op.value, None)

    def segment(self, items, first_bit: int = 0) -> tuple:
        out = []
        bit = first_bit
        for f, tname, atype in items:
            out.append(self.field(f, bit, tname, atype))
            bit += bits(f)
        return (bit, tuple(out))

    def field(self, f, bit: int, tname: str, atype) -> tuple:
        opt = f.optional
        if isinstance(f, IntegerField):
            return self.integer(f.operator, f.type, opt, bit, f.name, f.name, f.name, tname,
                                atype)
        if isinstance(f, DecimalField):
            if not f.individual:
                op = f.operator
                return (K_DECIMAL, OPS[op.kind], 0, int(opt), bit if op_bits(op, opt) else -1,
                        self.slot(op, f.name, "decimal", tname, atype), f.name, f.name,
                        None if op.value is None else tuple(op.value), None)
            eb = op_bits(f.exponent, opt)
            exp = self.integer(f.exponent, "int32", opt, bit, None, f.name + ".exponent",
                               f.name + "\x00exponent", tname, atype)
            mant = self.integer(f.mantissa, "int64", False, bit + eb, None,
                                f.name + ".mantissa", f.name + "\x00mantissa", tname, atype)
            return (K_DECIMAL_PARTS, 0, 0, int(opt), -1, -1, f.name, f.name, None, (exp, mant))
        if isinstance(f, (StringField, ByteVectorField)):
            if isinstance(f, StringField):
                kind, vkind = (K_ASCII, "ascii") if f.charset == "ascii" else (K_UNICODE,
                                                                               "unicode")
            else:
                kind, vkind = K_BYTES, "bytes"
            op = f.operator
            return (kind, OPS[op.kind], 0, int(opt), bit if op_bits(op, opt) else -1,
                    self.slot(op, f.name, vkind, tname, atype), f.name, f.name, op.value, None)
        if isinstance(f, SequenceField):
            lop = f.length.operator
            length = self.integer(lop, "uInt32", opt, bit, None, f"{f.name} length",
                                  f.length.name or f"\x00length\x00{f.name}", tname, atype)
            items = list(expand(f.fields, tname, f.type_ref or atype, self.templates))
            reads = any(_reads_bytes(x) for x, _, _ in items)
            return (K_SEQUENCE, 0, 0, int(opt), -1, -1, f.name, f.name, None,
                    (length, self.segment(items), int(reads)))
        if isinstance(f, GroupField):
            items = list(expand(f.fields, tname, f.type_ref or atype, self.templates))
            return (K_GROUP, 0, 0, int(opt), bit if opt else -1, -1, f.name, f.name, None,
                    self.segment(items))
        raise TypeError(f"unexpected field {f!r}")  # pragma: no cover

    def template(self, t) -> tuple:
        self.used = set()
        items = list(expand(t.fields, t.name, t.type_ref, self.templates))
        seg = self.segment(items, first_bit=1)
        return (t.id, t.name, t, seg[0], seg, tuple(sorted(self.used)))

    def program(self) -> tuple:
        tmpls = tuple(self.template(t) for t in self.templates)
        kinds = bytearray(len(self.layout))
        for (_, _, kind), idx in self.layout.entries().items():
            kinds[idx] = SLOT_KINDS[kind]
        return (PROGRAM_VERSION, tmpls, bytes(kinds))


def compile_program(templates: Templates) -> tuple:
    """The instruction program for ``templates`` (see the module docstring)."""
    return _Compiler(templates).program()


def make_vm(templates: Templates, *, strict: bool = True, decimals: str = "decimal",
            front_deltas: bool = False, required: bool = False):
    """A C codec for ``templates``, or None when unavailable (``required``: raise instead)."""
    if not available():
        if required:
            raise RuntimeError("the compiled FAST codec (marketdata.fast._fastvm) is not built")
        return None
    try:
        return _fastvm.VM(compile_program(templates), FastError, Decimal, strict=strict,
                          pairs=decimals == "pair", front_deltas=front_deltas)
    except ValueError:
        if required:
            raise
        return None
