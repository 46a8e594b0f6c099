"""Code generation for the encoder: one Python function per template (see encoder.py).

Contract: ``EncoderGen(templates, layout).template(t, fresh)`` appends the source of
``encode_<id>(V, D)`` (dictionaries in the list ``D``) or, with ``fresh``,
``encode_fresh_<id>(V)`` (dictionary entries as local variables, all undefined at the
start) to ``.w`` and returns its name; ``.ns`` is the namespace to compile it in (the
caller binds ``DELTA``).  A generated function returns the whole message (presence map,
template id, fields) as ``bytes``; it raises ``FastError`` for values the template cannot
carry, and ``KeyError``/``TypeError``/``ValueError`` that the Encoder turns into one.
"""

from __future__ import annotations

from decimal import Decimal

from . import primitives as P
from ._codegen import Writer, bits, expand, op_bits, segment_bits, slot, value_kind
from .dictionary import UNDEFINED, Layout
from .errors import FastError
from .templates import (
    INTEGER_RANGES, ByteVectorField, DecimalField, GroupField, IntegerField, Operator,
    SequenceField, StringField, Template, Templates,
)
from .values import _PAIR_CACHE, check_pair, normalize, rescale, tail_of, to_pair

__all__ = ["EncoderGen"]

EMPTY_BASE = ": delta with an empty previous value"




def _check_int(v, lo: int, hi: int, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, int):
            v = int(v)
        else:
            raise FastError(f"{name}: expected int, got {type(v).__name__} {v!r}")
    if not lo <= v <= hi:
        raise FastError(f"{name}: {v} outside [{lo}, {hi}]", "D2")
    return v


def _w_uint(out, v, hi, name):
    P.write_uint(out, _check_int(v, 0, hi, name))


def _w_uint_null(out, v, hi, name):
    P.write_uint(out, _check_int(v, 0, hi, name) + 1)


def _w_int(out, v, lo, hi, name):
    P.write_int(out, _check_int(v, lo, hi, name))


def _w_int_null(out, v, lo, hi, name):
    P.write_int_null(out, _check_int(v, lo, hi, name))


def _to_bytes(v, name):
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise FastError(f"{name}: expected bytes, got {type(v).__name__}")


def _to_utf8(v, name):
    try:
        return v.encode("utf-8")
    except AttributeError:
        raise FastError(f"{name}: expected str, got {type(v).__name__}") from None
    except UnicodeEncodeError as exc:
        raise FastError(f"{name}: not encodable as UTF-8 ({exc.reason})") from None


def _mismatch(name, v, c):
    raise FastError(f"{name}: value {v!r} differs from the constant {c!r}")


def _to_pair(x, name):
    try:
        return to_pair(x)
    except FastError as exc:
        raise FastError(f"{name}: {exc}") from None


def _base_namespace() -> dict:
    return {
        "U": UNDEFINED, "FastError": FastError, "PM1": P.PMAP1, "PMT": P.PMAP2,
        "EPM": P.encode_pmap,
        "WU": _w_uint, "WNU": _w_uint_null, "WS": _w_int, "WNS": _w_int_null,
        "WI": P.write_int, "WNI": P.write_int_null, "CHKI": _check_int,
        "AC": P._ASCII_CACHE, "ANC": P._ASCII_NULL_CACHE, "ENCA": P.ascii_entity,
        "ENCAN": P.ascii_entity_null, "U2": P.U2, "S2": P.S2, "G2": P._G2,
        "WB": P.write_bytes, "WNB": P.write_bytes_null, "TOB": _to_bytes, "UTF8": _to_utf8,
        "PAIR": _to_pair, "PC": _PAIR_CACHE, "DECIMAL": Decimal, "CHKP": check_pair,
        "NORM": normalize, "RESCALE": rescale, "TAIL": tail_of, "MISMATCH": _mismatch,
        "I64MIN": P.INT64_MIN, "I64MAX": P.INT64_MAX,
    }


class EncoderGen:
    """Emits one encode function per template."""

    def __init__(self, templates: Templates, layout: Layout) -> None:
        self.templates = templates
        self.layout = layout
        self.ns = _base_namespace()
        self.w = Writer(self.ns)
        self.fresh = False        # dictionary entries as locals (fresh per message)
        self.used: set[int] = set()

    def d(self, k: int) -> str:
        """The expression for dictionary entry ``k``."""
        if self.fresh:
            self.used.add(k)
            return f"d{k}"
        return f"D[{k}]"

    # ------------------------------------------------------------------ primitives
    def write_int(self, v, itype, nullable, name, maybe_none=False) -> None:
        """Append integer ``v`` (validated for ``itype``): one- and two-byte values
        inline, longer ones (and the validation of anything odd) in a helper."""
        w = self.w
        lo, hi = INTEGER_RANGES[itype]
        n = repr(name)
        if maybe_none:
            w(f"if {v} is None: ap(128)")
            first = "elif"
        else:
            first = "if"
        if itype.startswith("u"):
            if nullable:
                w(f"{first} 0 <= {v} < 127: ap({v} + 129)")
                w(f"elif 0 < {v} < 16383: out += U2[{v} + 1]")
                w(f"else: WNU(out, {v}, {hi}, {n})")
            else:
                w(f"{first} 0 <= {v} < 128: ap({v} | 128)")
                w(f"elif 0 < {v} < 16384: out += U2[{v}]")
                w(f"elif 0 < {v} < 2097152: ap({v} >> 14); out += U2[{v} & 16383]")
                w(f"elif 0 < {v} < 268435456: out += G2[{v} >> 14]; out += U2[{v} & 16383]")
                w(f"else: WU(out, {v}, {hi}, {n})")
        else:
            if nullable:
                w(f"{first} 0 <= {v} < 63: ap({v} + 129)")
                w(f"elif -64 <= {v} < 0: ap({v} & 127 | 128)")
                w(f"elif 0 < {v} < 8191: out += S2[{v} + 8193]")
                w(f"elif -8192 <= {v} < 0: out += S2[{v} + 8192]")
                w(f"else: WNS(out, {v}, {lo}, {hi}, {n})")
            else:
                w(f"{first} -64 <= {v} < 64: ap({v} & 127 | 128)")
                w(f"elif -8192 <= {v} < 8192: out += S2[{v} + 8192]")
                w(f"elif -1048576 <= {v} < 1048576: "
                  f"ap({v} >> 14 & 127); out += U2[{v} & 16383]")
                w(f"else: WS(out, {v}, {lo}, {hi}, {n})")

    def write_delta(self, d, nullable) -> None:
        """Append an (unbounded, already valid) signed delta."""
        w = self.w
        if nullable:
            w(f"if 0 <= {d} < 63: ap({d} + 129)")
            w(f"elif -64 <= {d} < 0: ap({d} & 127 | 128)")
            w(f"else: WNI(out, {d})")
        else:
            w(f"if -64 <= {d} < 64: ap({d} & 127 | 128)")
            w(f"elif -8192 <= {d} < 8192: out += S2[{d} + 8192]")
            w(f"elif -1048576 <= {d} < 1048576: "
              f"ap({d} >> 14 & 127); out += U2[{d} & 16383]")
            w(f"else: WI(out, {d})")

    def src(self, V: str, f_name: str, optional: bool) -> str:
        return f"{V}.get({f_name!r})" if optional else f"{V}[{f_name!r}]"

    def slot(self, op: Operator | None, key: str, kind: str, tname: str, atype) -> int | None:
        if op is None or op.kind in ("none", "constant", "default"):
            return None
        return slot(self.layout, op, key, kind, tname, atype)

    # ------------------------------------------------------------------ segments
    def segment(self, items, V: str, pm: str, bit: int) -> None:
        removals = []
        for f, tname, atype in items:
            self.field(f, V, pm, bit, tname, atype, removals)
            bit += bits(f)
        for pos, flag in reversed(removals):
            # an absent optional decimal's mantissa has no bit: close its static slot
            self.w(f"if {flag}: {pm} = ({pm} & {(1 << pos) - 1}) | (({pm} >> {pos + 1}) << {pos})")

    def field(self, f, V, pm, bit, tname, atype, removals) -> None:
        if isinstance(f, IntegerField):
            k = self.slot(f.operator, f.name, "int", tname, atype)
            v = self.w.var()
            src = self.src(V, f.name, f.optional)
            if f.operator.kind in ("constant", "default") and not f.optional:
                src = f"{V}.get({f.name!r}, {f.operator.value!r})"
            self.w(f"{v} = {src}")
            self.int_op(v, f.type, f.optional, f.operator, pm, bit, k, f.name)
        elif isinstance(f, DecimalField):
            self.decimal(f, V, pm, bit, tname, atype, removals)
        elif isinstance(f, (StringField, ByteVectorField)):
            kind = f.charset if isinstance(f, StringField) else "bytes"
            k = self.slot(f.operator, f.name, value_kind(f), tname, atype)
            self.string_op(f, kind, V, pm, bit, k)
        elif isinstance(f, SequenceField):
            self.sequence(f, V, pm, bit, tname, atype)
        elif isinstance(f, GroupField):
            self.group(f, V, pm, bit, tname, atype)
        else:  # pragma: no cover
            raise TypeError(f"unexpected field {f!r}")

    # ------------------------------------------------------------------ integers
    def int_op(self, v, itype, optional, op: Operator, pm, bit, k, name) -> None:
        """Encode the integer held in variable ``v`` (None when absent)."""
        w = self.w
        kind = op.kind
        lo, hi = INTEGER_RANGES[itype]
        B = 1 << bit
        init = op.value
        n = repr(name)
        if kind == "none":
            self.write_int(v, itype, optional, name, maybe_none=optional)
        elif kind == "constant":
            if optional:
                w(f"if {v} is not None:")
                with w.indent():
                    w(f"if {v} != {init!r}: MISMATCH({n}, {v}, {init!r})")
                    w(f"{pm} |= {B}")
            else:
                w(f"if {v} != {init!r}: MISMATCH({n}, {v}, {init!r})")
        elif kind == "default":
            if optional:
                if init is None:
                    w(f"if {v} is not None:")
                else:
                    w(f"if {v} is None: {pm} |= {B}; ap(128)")
                    w(f"elif {v} != {init!r}:")
                with w.indent():
                    w(f"{pm} |= {B}")
                    self.write_int(v, itype, True, name)
            else:
                w(f"if {v} != {init!r}:")
                with w.indent():
                    w(f"{pm} |= {B}")
                    self.write_int(v, itype, False, name)
        elif kind in ("copy", "increment"):
            p = w.var("p")
            w(f"{p} = {self.d(k)}")
            if optional:
                w(f"if {v} is None:")
                with w.indent():
                    if init is None:
                        w(f"if {p} is U: {self.d(k)} = None")
                        w(f"elif {p} is not None: {pm} |= {B}; ap(128); {self.d(k)} = None")
                    else:
                        w(f"if {p} is not None: {pm} |= {B}; ap(128); {self.d(k)} = None")
                w("else:")
                w.level += 1
            if kind == "copy":
                if init is not None:
                    w(f"if {p} is U and {v} == {init!r}: {self.d(k)} = {v}")
                    w(f"elif {v} != {p}:")
                else:
                    w(f"if {v} != {p}:")
            else:
                x = w.var("x")
                w(f"if {p} is U: {x} = {init!r}" if init is not None else f"if {p} is U: {x} = U")
                w(f"elif {p} is None: {x} = U")
                w(f"else: {x} = {p} + 1 if {p} < {hi} else {lo}")
                w(f"if {v} != {x}:")
            with w.indent():
                w(f"{pm} |= {B}")
                self.write_int(v, itype, optional, name)
                if kind == "copy":
                    w(f"{self.d(k)} = {v}")
            if kind == "increment":
                w(f"{self.d(k)} = {v}")
            if optional:
                w.level -= 1
        elif kind == "delta":
            if optional:
                w(f"if {v} is None: ap(128)")
                w("else:")
                w.level += 1
            w(f"if {v}.__class__ is not int or not {lo} <= {v} <= {hi}: "
              f"{v} = CHKI({v}, {lo}, {hi}, {n})")
            p = w.var("p")
            w(f"{p} = {self.d(k)}")
            w(f"if {p} is U: {p} = {init or 0!r}")
            w(f"elif {p} is None: raise FastError({name + EMPTY_BASE!r}, 'D6')")
            d = w.var("d")
            w(f"{d} = {v} - {p}")
            self.write_delta(d, optional)
            w(f"{self.d(k)} = {v}")
            if optional:
                w.level -= 1
        else:
            raise TypeError(f"operator {kind} on an integer")  # prevented by the parser

    # ------------------------------------------------------------------ decimals
    def pair(self, x, m, e, name) -> None:
        """Split the user value in ``x`` into validated mantissa/exponent variables."""
        w = self.w
        w(f"if {x}.__class__ is tuple: {m}, {e} = {x}")
        w(f"elif {x}.__class__ is DECIMAL: {m}, {e} = PC.get(str({x})) or PAIR({x}, {name!r})")
        w(f"else: {m}, {e} = PAIR({x}, {name!r})")
        w(f"if {m}.__class__ is not int or {e}.__class__ is not int"
          f" or not (-63 <= {e} <= 63 and I64MIN <= {m} <= I64MAX): CHKP({m}, {e}, {name!r})")

    def decimal(self, f: DecimalField, V, pm, bit, tname, atype, removals) -> None:
        w = self.w
        x, m, e = w.var("x"), w.var("m"), w.var("e")
        name = f.name
        opt = f.optional
        op = f.operator
        if op is not None and op.kind == "constant" and not opt:
            w(f"{x} = {V}.get({name!r})")
            w(f"if {x} is not None:")
            with w.indent():
                self.pair(x, m, e, name)
                c = tuple(op.value)
                w(f"if NORM({m}, {e}) != {c!r}: MISMATCH({name!r}, {x}, {c!r})")
            return
        if op is not None and op.kind == "default" and not opt:
            w(f"{x} = {V}.get({name!r}, {tuple(op.value)!r})")
        else:
            w(f"{x} = {self.src(V, name, opt)}")
        if opt:
            w(f"if {x} is None: {m} = {e} = None")
            w("else:")
            with w.indent():
                self.pair(x, m, e, name)
        else:
            self.pair(x, m, e, name)
        if op is None:
            self.decimal_individual(f, m, e, pm, bit, tname, atype, removals)
            return
        k = self.slot(op, name, "decimal", tname, atype)
        B = 1 << bit
        init = tuple(op.value) if op.value is not None else None
        if op.kind == "none":
            self.write_pair(m, e, opt, name)
        elif op.kind == "constant":  # optional
            w(f"if {m} is not None:")
            with w.indent():
                w(f"if NORM({m}, {e}) != {init!r}: MISMATCH({name!r}, {x}, {init!r})")
                w(f"{pm} |= {B}")
        elif op.kind == "default":
            if opt:
                if init is None:
                    w(f"if {m} is not None:")
                else:
                    w(f"if {m} is None: {pm} |= {B}; ap(128)")
                    w(f"elif ({m}, {e}) != {init!r}:")
            else:
                w(f"if ({m}, {e}) != {init!r}:")
            with w.indent():
                w(f"{pm} |= {B}")
                self.write_pair(m, e, opt, name, maybe_none=False)
        elif op.kind == "copy":
            p = w.var("p")
            w(f"{p} = {self.d(k)}")
            if opt:
                w(f"if {m} is None:")
                with w.indent():
                    if init is None:
                        w(f"if {p} is U: {self.d(k)} = None")
                        w(f"elif {p} is not None: {pm} |= {B}; ap(128); {self.d(k)} = None")
                    else:
                        w(f"if {p} is not None: {pm} |= {B}; ap(128); {self.d(k)} = None")
                w("else:")
                w.level += 1
            me = w.var("me")
            w(f"{me} = ({m}, {e})")
            if init is not None:
                w(f"if {p} is U and {me} == {init!r}: {self.d(k)} = {me}")
                w(f"elif {me} != {p}:")
            else:
                w(f"if {me} != {p}:")
            with w.indent():
                w(f"{pm} |= {B}")
                self.write_pair(m, e, opt, name, maybe_none=False)
                w(f"{self.d(k)} = {me}")
            if opt:
                w.level -= 1
        elif op.kind == "delta":
            if opt:
                w(f"if {m} is None: ap(128)")
                w("else:")
                w.level += 1
            p = w.var("p")
            w(f"{p} = {self.d(k)}")
            w(f"if {p} is U: {p} = {init if init is not None else (0, 0)!r}")
            w(f"elif {p} is None: raise FastError({name + EMPTY_BASE!r}, 'D6')")
            de, dm = w.var("de"), w.var("dm")
            w(f"{de} = {e} - {p}[1]; {dm} = {m} - {p}[0]")
            self.write_delta(de, opt)
            self.write_delta(dm, False)
            w(f"{self.d(k)} = ({m}, {e})")
            if opt:
                w.level -= 1
        else:
            raise TypeError(f"operator {op.kind} on a decimal")  # prevented by the parser

    def write_pair(self, m, e, nullable, name, maybe_none=None) -> None:
        if maybe_none is None:
            maybe_none = nullable
        self.write_int(e, "int32", nullable, name + ".exponent", maybe_none=maybe_none)
        if maybe_none:
            self.w(f"if {m} is not None:")
            with self.w.indent():
                self.write_int(m, "int64", False, name + ".mantissa")
        else:
            self.write_int(m, "int64", False, name + ".mantissa")

    def decimal_individual(self, f: DecimalField, m, e, pm, bit, tname, atype,
                           removals) -> None:
        w = self.w
        eb = op_bits(f.exponent, f.optional)
        mb = op_bits(f.mantissa, False)
        ke = self.slot(f.exponent, f.name + "\x00exponent", "int", tname, atype)
        km = self.slot(f.mantissa, f.name + "\x00mantissa", "int", tname, atype)
        if f.exponent.kind == "constant":
            c = f.exponent.value
            w(f"if {e} is not None and {e} != {c}: "
              f"{m} = RESCALE({m}, {e}, {c}, {f.name!r}); {e} = {c}")
        self.int_op(e, "int32", f.optional, f.exponent, pm, bit, ke, f.name + ".exponent")
        if f.optional:
            if mb:
                flag = w.var("skip")
                w(f"{flag} = {e} is None")
                removals.append((bit + eb, flag))
            w(f"if {e} is not None:")
            w.level += 1
        self.int_op(m, "int64", False, f.mantissa, pm, bit + eb, km, f.name + ".mantissa")
        if f.optional:
            w.level -= 1

    # ------------------------------------------------------------------ strings
    def write_str(self, r, kind, nullable) -> None:
        """Append a string (never None here) or byte vector; ASCII encodings are memoised."""
        if kind == "ascii":
            b = self.w.var("b")
            cache, fn = ("ANC", "ENCAN") if nullable else ("AC", "ENCA")
            self.w(f"{b} = {cache}.get({r})")
            self.w(f"out += {b} if {b} is not None else {fn}({r})")
        else:
            self.w(f"{'WNB' if nullable else 'WB'}(out, {r})")

    def string_op(self, f, kind, V, pm, bit, k) -> None:
        """ASCII strings work on str; unicode strings (as UTF-8) and byte vectors on bytes."""
        w = self.w
        op = f.operator
        opt = f.optional
        B = 1 << bit
        name = f.name
        init = op.value
        if kind == "unicode" and init is not None:
            init = init.encode("utf-8")
        ic = w.const(init) if init is not None else "None"
        empty = "''" if kind == "ascii" else "b''"
        r = w.var("r")
        if op.kind in ("constant", "default") and not opt:
            w(f"{r} = {V}.get({name!r}, {w.const(op.value)})")
        else:
            w(f"{r} = {self.src(V, name, opt)}")
        # normalise to the operator's working type
        if kind == "unicode":
            w(f"if {r} is not None: {r} = UTF8({r}, {name!r})" if opt else
              f"{r} = UTF8({r}, {name!r})")
        elif kind == "bytes":
            w(f"if {r}.__class__ is not bytes and {r} is not None: {r} = TOB({r}, {name!r})")
        if op.kind == "none":
            self.write_str(r, kind, opt)
        elif op.kind == "constant":
            if opt:
                w(f"if {r} is not None:")
                with w.indent():
                    w(f"if {r} != {ic}: MISMATCH({name!r}, {r}, {ic})")
                    w(f"{pm} |= {B}")
            else:
                w(f"if {r} != {ic}: MISMATCH({name!r}, {r}, {ic})")
        elif op.kind == "default":
            if opt:
                if init is None:
                    w(f"if {r} is not None:")
                else:
                    w(f"if {r} is None: {pm} |= {B}; ap(128)")
                    w(f"elif {r} != {ic}:")
            else:
                w(f"if {r} != {ic}:")
            with w.indent():
                w(f"{pm} |= {B}")
                self.write_str(r, kind, opt)
        elif op.kind in ("copy", "tail"):
            p = w.var("p")
            w(f"{p} = {self.d(k)}")
            if opt:
                w(f"if {r} is None:")
                with w.indent():
                    if init is None:
                        w(f"if {p} is U: {self.d(k)} = None")
                        w(f"elif {p} is not None: {pm} |= {B}; ap(128); {self.d(k)} = None")
                    else:
                        w(f"if {p} is not None: {pm} |= {B}; ap(128); {self.d(k)} = None")
                w("else:")
                w.level += 1
            if init is not None:
                w(f"if {p} is U and {r} == {ic}: {self.d(k)} = {r}")
                w(f"elif {r} != {p} or {p} is None:")
            else:
                w(f"if {r} != {p} or {p} is None:")
            with w.indent():
                w(f"{pm} |= {B}")
                if op.kind == "copy":
                    self.write_str(r, kind, opt)
                else:
                    tv = w.var("tv")
                    w(f"{tv} = TAIL({p} if {p} is not U and {p} is not None else "
                      f"{ic if init is not None else empty}, {r}, {name!r})")
                    self.write_str(tv, kind, opt)
                w(f"{self.d(k)} = {r}")
            if opt:
                w.level -= 1
        elif op.kind == "delta":
            if opt:
                w(f"if {r} is None: ap(128)")
                w("else:")
                w.level += 1
            elif kind == "ascii":
                w(f"if {r}.__class__ is not str: {r} = {r} + ''")  # TypeError unless str
            p = w.var("p")
            w(f"{p} = {self.d(k)}")
            w(f"if {p} is U: {p} = {ic if init is not None else empty}")
            w(f"elif {p} is None: raise FastError({name + EMPTY_BASE!r}, 'D6')")
            sl, df = w.var("sl"), w.var("df")
            w(f"{sl}, {df} = DELTA({p}, {r})")
            self.write_delta(sl, opt)
            self.write_str(df, kind, False)
            w(f"{self.d(k)} = {r}")
            if opt:
                w.level -= 1
        else:
            raise TypeError(f"operator {op.kind} on a string")  # prevented by the parser

    # ------------------------------------------------------------------ composites
    def sequence(self, f: SequenceField, V, pm, bit, tname, atype) -> None:
        w = self.w
        s, n = w.var("s"), w.var("n")
        w(f"{s} = {self.src(V, f.name, f.optional)}")
        if f.optional:
            w(f"{n} = None if {s} is None else len({s})")
        else:
            w(f"{n} = len({s})")
        lop = f.length.operator
        key = f.length.name or f"\x00length\x00{f.name}"
        k = self.slot(lop, key, "int", tname, atype)
        self.int_op(n, "uInt32", f.optional, lop, pm, bit, k, f"{f.name} length")
        items = list(expand(f.fields, tname, f.type_ref or atype, self.templates))
        nb = segment_bits(items)
        if f.optional:
            w(f"if {s} is not None:")
            w.level += 1
        E = w.var("E")
        w(f"for {E} in {s}:")
        with w.indent():
            if nb:
                q, pv = w.var("q"), w.var("pm")
                w(f"{q} = len(out); {pv} = 0")
                self.segment(items, E, pv, 0)
                w(f"out[{q}:{q}] = PMT[{pv}] if {pv} < 16384 else EPM({pv})")
            else:
                self.segment(items, E, pm, 0)
                w("pass")
        if f.optional:
            w.level -= 1

    def group(self, f: GroupField, V, pm, bit, tname, atype) -> None:
        w = self.w
        g = w.var("g")
        w(f"{g} = {self.src(V, f.name, f.optional)}")
        items = list(expand(f.fields, tname, f.type_ref or atype, self.templates))
        nb = segment_bits(items)
        if f.optional:
            w(f"if {g} is not None:")
            w.level += 1
            w(f"{pm} |= {1 << bit}")
        if nb:
            q, pv = w.var("q"), w.var("pm")
            w(f"{q} = len(out); {pv} = 0")
            self.segment(items, g, pv, 0)
            w(f"out[{q}:{q}] = PMT[{pv}] if {pv} < 16384 else EPM({pv})")
        else:
            self.segment(items, g, pm, 0)
        if f.optional:
            w.level -= 1

    # ------------------------------------------------------------------ templates
    def template(self, t: Template, fresh: bool) -> str:
        """``fresh``: the variant for a message encoded with fresh dictionaries, whose
        entries are then plain local variables (no list, no reset)."""
        w = self.w
        self.fresh, self.used = fresh, set()
        fname = f"encode_{'fresh_' if fresh else ''}{t.id}"
        tid = bytearray()
        P.write_uint(tid, t.id)
        items = list(expand(t.fields, t.name, t.type_ref, self.templates))
        w(f"def {fname}(V{'' if fresh else ', D'}):")
        with w.indent():
            if fresh:
                w(f"out = bytearray({bytes(tid)!r}); pm0 = 1; ap = out.append")
            else:
                w("out = bytearray(); ap = out.append")
                w(f"if D[0] == {t.id}: pm0 = 0")
                w(f"else: D[0] = {t.id}; out += {bytes(tid)!r}; pm0 = 1")
            mark = len(w.lines)
            self.segment(items, "V", "pm0", 1)
            w("return (PMT[pm0] if pm0 < 16384 else EPM(pm0)) + out")
        if self.used:
            w.lines.insert(mark, "    " + " = ".join(f"d{k}" for k in sorted(self.used)) + " = U")
        w("")
        self.fresh = False
        return fname


