"""Code generation for the decoder: one Python function per template (see decoder.py).

Contract: ``DecoderGen(templates, layout, strict, decimals).template(t, fresh)`` appends
the source of ``decode_<id>(data, i, pm0, D)`` (dictionaries in the list ``D``) or, with
``fresh``, ``decode_fresh_<id>(data, i, pm0)`` (dictionary entries as local variables,
all undefined at the start) to ``.w``, and returns its name and the number of
presence-map bits the message segment uses; ``.ns`` is the namespace the source must be
compiled in.  The generated functions read the message body after the presence map and
template id and return ``(values, next_position)``; they raise ``FastError`` for dynamic
and (when strict) reportable errors, and ``IndexError`` when the data ends early.
"""

from __future__ import annotations

from . import primitives as P
from ._codegen import Writer, bits, expand, op_bits, segment_bits, slot, value_kind
from .dictionary import UNDEFINED, Layout
from .errors import FastError
from .templates import (
    INTEGER_RANGES, ByteVectorField, DecimalField, GroupField, IntegerField, Operator,
    SequenceField, StringField, Template, Templates,
)
from .values import _DECIMAL_CACHE, apply_delta, apply_tail, to_decimal

__all__ = ["DecoderGen", "REV"]


REV = tuple(P.REV7[b & 0x7F] for b in range(256))
_WIDE = {"int32": (-(1 << 33), 1 << 33), "uInt32": (-(1 << 33), 1 << 33),
         "int64": (-(1 << 65), 1 << 65), "uInt64": (-(1 << 65), 1 << 65)}


def _base_namespace() -> dict:
    return {
        "M": P.MULTI, "U": UNDEFINED, "FastError": FastError,
        "TU": P.U_TAB, "TNU": P.NU_TAB, "TS": P.S_TAB, "TNS": P.NS_TAB, "CH": P.CHR_TAB,
        "REV": REV, "SHI": P.SHI_TAB, "BIG": 1 << 72,
        "EDGE": tuple(b in (0x00, 0x7F) for b in range(256)),
        "RU": P.read_uint, "RNU": P.read_uint_null, "RS": P.read_int, "RNS": P.read_int_null,
        "RA": P.read_ascii, "RNA": P.read_ascii_null, "RB": P.read_bytes,
        "RNB": P.read_bytes_null, "RPM": P.read_pmap,
        "APD": apply_delta, "APT": apply_tail, "DEC": to_decimal, "DC": _DECIMAL_CACHE,
    }


class DecoderGen:
    """Emits one decode function per template."""

    def __init__(self, templates: Templates, layout: Layout, strict: bool, decimals: str):
        self.templates = templates
        self.layout = layout
        self.strict = strict
        self.pairs = decimals == "pair"
        self.ns = _base_namespace()
        self.w = Writer(self.ns)
        self.S = "" if strict else ", False"
        self.fresh = False        # dictionary entries as locals (fresh per message)
        self.used: set[int] = set()

    def d(self, k: int) -> str:
        """The expression for dictionary entry ``k``."""
        if self.fresh:
            self.used.add(k)
            return f"d{k}"
        return f"D[{k}]"

    # ------------------------------------------------------------------ primitives
    def read_int(self, t: str, itype: str, nullable: bool, wide: bool = False) -> None:
        """Decode an integer into ``t``.  One-byte entities take one table lookup; longer
        ones are gathered inline, and only a suspicious result (out of range, or a first
        byte that may make it overlong) is re-read by the checking helper, which raises
        the right error (or, when not strict, returns the value)."""
        w = self.w
        lo, hi = (_WIDE if wide else INTEGER_RANGES)[itype]
        signed = wide or itype.startswith("int")
        if signed:
            tab, fn = ("TNS", "RNS") if nullable else ("TS", "RS")
            call = f"{fn}(data, {{s}}, {lo}, {hi}{self.S})"
        else:
            tab, fn = ("TNU", "RNU") if nullable else ("TU", "RU")
            call = f"{fn}(data, {{s}}, {hi}{self.S})"
        w(f"{t} = {tab}[data[i]]; i += 1")
        w(f"if {t} is M:")
        with w.indent():
            s_, b = w.var("s"), w.var("b")
            first = f"SHI[data[{s_}]]" if signed else f"data[{s_}]"
            w(f"{s_} = i - 1; {b} = data[i]; i += 1")
            w(f"if {b} & 128:")  # two bytes: overlong exactly when the value fits one byte
            with w.indent():
                w(f"{t} = {first} << 7 | {b} & 127")
                w(f"if {'-64 <= ' if signed else ''}{t} < {64 if signed else 128}: "
                  f"{t}, i = {call.format(s=s_)}")
                if nullable:
                    w(f"elif {t} > 0: {t} -= 1" if signed else f"else: {t} -= 1")
            w("else:")
            with w.indent():
                w(f"{t} = {first}")
                w(f"while {b} < 128 and {t} < BIG: {t} = {t} << 7 | {b}; {b} = data[i]; i += 1")
                w(f"{t} = {t} << 7 | {b} & 127")
                hi_raw = hi + 1 if nullable else hi
                if signed:
                    bad = f"EDGE[data[{s_}]] or not {lo} <= {t} <= {hi_raw}"
                else:
                    bad = f"not data[{s_}] or {t} > {hi_raw}"
                w(f"if {bad}: {t}, i = {call.format(s=s_)}")
                if nullable:
                    w(f"elif {t} > 0: {t} -= 1" if signed else f"else: {t} -= 1")

    def read_pmap(self, pv: str, nbits: int, where: str) -> None:
        w = self.w
        b = w.var("b")
        w(f"{pv} = data[i]; i += 1")
        w(f"if {pv} & 128: {pv} = REV[{pv}]")
        w("else:")
        with w.indent():
            # two bytes inline (a second byte of 0x80 would be overlong: the helper says so)
            w(f"{b} = data[i]")
            w(f"if {b} > 128: {pv} = REV[{pv}] | REV[{b}] << 7; i += 1")
            w(f"else: {pv}, i = RPM(data, i - 1{self.S})")
        if self.strict:
            w(f"if {pv} >> {nbits}: raise FastError("
              f"{'presence map of ' + where + ' has bits beyond the ' + str(nbits) + ' used'!r},"
              f" 'R8')")

    def raise_(self, msg: str, code: str) -> str:
        return f"raise FastError({msg!r}, {code!r})"

    # ------------------------------------------------------------------ segments
    def segment(self, items, pm: str, bit: int) -> list[tuple[str, str]]:
        """Emit the fields of one segment; returns (field name, variable) pairs."""
        out = []
        for f, tname, atype in items:
            t = self.w.var()
            self.field(f, t, pm, bit, tname, atype)
            bit += bits(f)
            out.append((f.name, t))
        return out

    @staticmethod
    def dict_literal(pairs) -> str:
        return "{" + ", ".join(f"{name!r}: {var}" for name, var in pairs) + "}"

    def field(self, f, t, pm, bit, tname, atype) -> None:
        if isinstance(f, IntegerField):
            k = self.slot(f.operator, f.name, "int", tname, atype)
            self.int_op(t, f.type, f.optional, f.operator, pm, bit, k, f.name)
        elif isinstance(f, DecimalField):
            if f.individual:
                self.decimal_individual(f, t, pm, bit, tname, atype)
            else:
                k = self.slot(f.operator, f.name, "decimal", tname, atype)
                self.decimal_single(f, t, pm, bit, k)
        elif isinstance(f, (StringField, ByteVectorField)):
            kind = f.charset if isinstance(f, StringField) else "bytes"
            k = self.slot(f.operator, f.name, value_kind(f), tname, atype)
            self.string_op(f, kind, t, pm, bit, k)
        elif isinstance(f, SequenceField):
            self.sequence(f, t, pm, bit, tname, atype)
        elif isinstance(f, GroupField):
            self.group(f, t, pm, bit, tname, atype)
        else:  # pragma: no cover
            raise TypeError(f"unexpected field {f!r}")

    def slot(self, op: Operator | None, key: str, kind: str, tname: str, atype) -> int | None:
        if op is None or op.kind in ("none", "constant", "default"):
            return None
        return slot(self.layout, op, key, kind, tname, atype)

    # ------------------------------------------------------------------ integers
    def int_op(self, t, itype, optional, op: Operator, pm, bit, k, name) -> None:
        w = self.w
        kind = op.kind
        lo, hi = INTEGER_RANGES[itype]
        B = 1 << bit
        init = op.value
        if kind == "none":
            self.read_int(t, itype, optional)
        elif kind == "constant":
            w(f"{t} = {init!r} if {pm} & {B} else None" if optional else f"{t} = {init!r}")
        elif kind == "default":
            w(f"if {pm} & {B}:")
            with w.indent():
                self.read_int(t, itype, optional)
            w(f"else: {t} = {init!r}")
        elif kind in ("copy", "increment"):
            w(f"if {pm} & {B}:")
            with w.indent():
                self.read_int(t, itype, optional)
                w(f"{self.d(k)} = {t}")
            w("else:")
            with w.indent():
                w(f"{t} = {self.d(k)}")
                w(f"if {t} is U:")
                with w.indent():
                    if init is None and not optional:
                        w(self.raise_(f"{name}: mandatory field not in the stream, no previous"
                                      " and no initial value", "D5"))
                    else:
                        w(f"{t} = {init!r}; {self.d(k)} = {t}")
                if kind == "increment":
                    w(f"elif {t} is not None: "
                      f"{t} = {t} + 1 if {t} < {hi} else {lo}; {self.d(k)} = {t}")
                    if not optional:
                        msg = name + ": mandatory field with empty previous value"
                        w(f"else: {self.raise_(msg, 'D6')}")
                elif not optional:
                    w(f"elif {t} is None: "
                      f"{self.raise_(name + ': mandatory field with empty previous value', 'D6')}")
        elif kind == "delta":
            d = w.var("d")
            self.read_int(d, itype, optional, wide=True)
            if optional:
                w(f"if {d} is None: {t} = None")
                w("else:")
                w.level += 1
            w(f"{t} = {self.d(k)}")
            w(f"if {t} is U: {t} = {init or 0!r}")
            w(f"elif {t} is None: "
              f"{self.raise_(name + ': delta with an empty previous value', 'D6')}")
            w(f"{t} += {d}")
            if self.strict:
                w(f"if not {lo} <= {t} <= {hi}: "
                  f"raise FastError(f'{name}: delta result {{{t}}} outside the {itype} range',"
                  f" 'R4')")
            w(f"{self.d(k)} = {t}")
            if optional:
                w.level -= 1
        else:
            raise TypeError(f"operator {kind} on an integer")  # prevented by the parser

    # ------------------------------------------------------------------ decimals
    def make_decimal(self, t, m, e) -> None:
        if self.pairs:
            self.w(f"{t} = ({m}, {e})")
        else:
            self.w(f"{t} = DC.get(({m}, {e})) or DEC({m}, {e})")

    def out_const(self, pair) -> str:
        if pair is None:
            return "None"
        return self.w.const(tuple(pair) if self.pairs else to_decimal(*pair))

    def check_exponent(self, e, name) -> None:
        if self.strict:
            self.w(f"if not -63 <= {e} <= 63: "
                   f"raise FastError(f'{name}: exponent {{{e}}} outside [-63, 63]', 'R1')")

    def read_pair(self, t, m, e, optional, name, store: int | None = None) -> None:
        """Read a scaled number (exponent, mantissa) into t; optionally store in D."""
        w = self.w
        self.read_int(e, "int32", optional)
        if optional:
            w(f"if {e} is None:")
            with w.indent():
                w(f"{t} = None")
                if store is not None:
                    w(f"{self.d(store)} = None")
            w("else:")
            w.level += 1
        self.check_exponent(e, name)
        self.read_int(m, "int64", False)
        self.make_decimal(t, m, e)
        if store is not None:
            w(f"{self.d(store)} = ({m}, {e})")
        if optional:
            w.level -= 1

    def decimal_single(self, f: DecimalField, t, pm, bit, k) -> None:
        w = self.w
        op = f.operator
        B = 1 << bit
        m, e = w.var("m"), w.var("e")
        opt = f.optional
        name = f.name
        init = op.value
        if op.kind == "none":
            self.read_pair(t, m, e, opt, name)
        elif op.kind == "constant":
            c = self.out_const(init)
            w(f"{t} = {c} if {pm} & {B} else None" if opt else f"{t} = {c}")
        elif op.kind == "default":
            w(f"if {pm} & {B}:")
            with w.indent():
                self.read_pair(t, m, e, opt, name)
            w(f"else: {t} = {self.out_const(init)}")
        elif op.kind == "copy":
            w(f"if {pm} & {B}:")
            with w.indent():
                self.read_pair(t, m, e, opt, name, store=k)
            w("else:")
            with w.indent():
                p = w.var("p")
                w(f"{p} = {self.d(k)}")
                w(f"if {p} is U:")
                with w.indent():
                    if init is None and not opt:
                        w(self.raise_(f"{name}: mandatory field not in the stream, no previous"
                                      " and no initial value", "D5"))
                    else:
                        w(f"{self.d(k)} = {p} = {w.const(init) if init else None}")
                w(f"if {p} is None:")
                with w.indent():
                    w(f"{t} = None" if opt else self.raise_(
                        f"{name}: mandatory field with empty previous value", "D6"))
                w("else:")
                with w.indent():
                    w(f"{m}, {e} = {p}")
                    self.make_decimal(t, m, e)
        elif op.kind == "delta":
            de, dm = w.var("de"), w.var("dm")
            self.read_int(de, "int32", opt, wide=True)
            if opt:
                w(f"if {de} is None: {t} = None")
                w("else:")
                w.level += 1
            self.read_int(dm, "int64", False, wide=True)
            p = w.var("p")
            w(f"{p} = {self.d(k)}")
            w(f"if {p} is U: {p} = {w.const(init) if init else (0, 0)}")
            w(f"elif {p} is None: "
              f"{self.raise_(name + ': delta with an empty previous value', 'D6')}")
            w(f"{m} = {p}[0] + {dm}; {e} = {p}[1] + {de}")
            self.check_exponent(e, name)
            if self.strict:
                w(f"if not {P.INT64_MIN} <= {m} <= {P.INT64_MAX}: "
                  f"raise FastError(f'{name}: mantissa {{{m}}} outside int64', 'R1')")
            w(f"{self.d(k)} = ({m}, {e})")
            self.make_decimal(t, m, e)
            if opt:
                w.level -= 1
        else:
            raise TypeError(f"operator {op.kind} on a decimal")  # prevented by the parser

    def decimal_individual(self, f: DecimalField, t, pm, bit, tname, atype) -> None:
        w = self.w
        m, e = w.var("m"), w.var("e")
        eb = op_bits(f.exponent, f.optional)
        mb = op_bits(f.mantissa, False)
        ke = self.slot(f.exponent, f.name + "\x00exponent", "int", tname, atype)
        km = self.slot(f.mantissa, f.name + "\x00mantissa", "int", tname, atype)
        self.int_op(e, "int32", f.optional, f.exponent, pm, bit, ke, f.name + ".exponent")
        if f.optional:
            w(f"if {e} is None:")
            with w.indent():
                w(f"{t} = None")
                if mb:
                    # the mantissa's bit exists only when the exponent is present: open
                    # a zero at its static position so later fields keep theirs
                    pos = bit + eb
                    w(f"{pm} = ({pm} & {(1 << pos) - 1}) | (({pm} >> {pos}) << {pos + 1})")
            w("else:")
            w.level += 1
        self.check_exponent(e, f.name)
        self.int_op(m, "int64", False, f.mantissa, pm, bit + eb, km, f.name + ".mantissa")
        self.make_decimal(t, m, e)
        if f.optional:
            w.level -= 1

    # ------------------------------------------------------------------ strings
    def read_str(self, t, kind, nullable) -> None:
        w = self.w
        if kind == "ascii":
            b, j = w.var("b"), w.var("j")
            w(f"{b} = data[i]")
            w(f"if {b} > 128: {t} = CH[{b}]; i += 1")
            w(f"elif 0 < {b} < 128:")   # not a one-byte string, NULL/empty or a preamble
            with w.indent():
                w(f"{j} = i + 1")
                w(f"while data[{j}] < 128: {j} += 1")
                w(f"{t} = data[i:{j}].decode() + CH[data[{j}]]; i = {j} + 1")
            w(f"else: {t}, i = {'RNA' if nullable else 'RA'}(data, i{self.S})")
        else:
            w(f"{t}, i = {'RNB' if nullable else 'RB'}(data, i{self.S})")

    def string_op(self, f, kind, t, pm, bit, k) -> None:
        """ASCII strings decode to str; unicode strings and byte vectors to bytes first
        (operators work on the bytes), unicode then to str."""
        w = self.w
        op = f.operator
        opt = f.optional
        B = 1 << bit
        name = f.name
        init = op.value
        if kind == "unicode" and init is not None:
            init = init.encode("utf-8")
        empty = "''" if kind == "ascii" else "b''"
        ic = w.const(init) if init is not None else "None"
        r = w.var("r") if kind == "unicode" else t
        if op.kind == "none":
            self.read_str(r, kind, opt)
        elif op.kind == "constant":
            w(f"{r} = {ic} if {pm} & {B} else None" if opt else f"{r} = {ic}")
        elif op.kind == "default":
            w(f"if {pm} & {B}:")
            with w.indent():
                self.read_str(r, kind, opt)
            w(f"else: {r} = {ic}")
        elif op.kind == "copy":
            w(f"if {pm} & {B}:")
            with w.indent():
                self.read_str(r, kind, opt)
                w(f"{self.d(k)} = {r}")
            w("else:")
            with w.indent():
                w(f"{r} = {self.d(k)}")
                w(f"if {r} is U:")
                with w.indent():
                    if init is None and not opt:
                        w(self.raise_(f"{name}: mandatory field not in the stream, no previous"
                                      " and no initial value", "D5"))
                    else:
                        w(f"{r} = {ic}; {self.d(k)} = {r}")
                if not opt:
                    w(f"elif {r} is None: "
                      f"{self.raise_(name + ': mandatory field with empty previous value', 'D6')}")
        elif op.kind == "delta":
            sl = w.var("sl")
            self.read_int(sl, "int32", opt)
            if opt:
                w(f"if {sl} is None: {r} = None")
                w("else:")
                w.level += 1
            df = w.var("df")
            self.read_str(df, kind, False)
            p = w.var("p")
            w(f"{p} = {self.d(k)}")
            w(f"if {p} is U: {p} = {ic if init is not None else empty}")
            w(f"elif {p} is None: "
              f"{self.raise_(name + ': delta with an empty previous value', 'D6')}")
            w(f"{r} = APD({p}, {sl}, {df}); {self.d(k)} = {r}")
            if opt:
                w.level -= 1
        elif op.kind == "tail":
            w(f"if {pm} & {B}:")
            with w.indent():
                tv = w.var("tv")
                self.read_str(tv, kind, opt)
                if opt:
                    w(f"if {tv} is None: {r} = None; {self.d(k)} = None")
                    w("else:")
                    w.level += 1
                p = w.var("p")
                w(f"{p} = {self.d(k)}")
                w(f"if {p} is U or {p} is None: {p} = {ic if init is not None else empty}")
                w(f"{r} = APT({p}, {tv}); {self.d(k)} = {r}")
                if opt:
                    w.level -= 1
            w("else:")
            with w.indent():
                w(f"{r} = {self.d(k)}")
                w(f"if {r} is U:")
                with w.indent():
                    if init is None and not opt:
                        w(self.raise_(f"{name}: mandatory tail field not in the stream and no "
                                      "initial value", "D6"))
                    else:
                        w(f"{r} = {ic}; {self.d(k)} = {r}")
                if not opt:
                    w(f"elif {r} is None: "
                      f"{self.raise_(name + ': mandatory field with empty previous value', 'D7')}")
        else:
            raise TypeError(f"operator {op.kind} on a string")  # prevented by the parser
        if kind == "unicode":
            if opt:
                w(f"{t} = None if {r} is None else {r}.decode('utf-8')")
            else:
                w(f"{t} = {r}.decode('utf-8')")

    # ------------------------------------------------------------------ composites
    def sequence(self, f: SequenceField, t, pm, bit, tname, atype) -> None:
        w = self.w
        n = w.var("n")
        lop = f.length.operator
        key = f.length.name or f"\x00length\x00{f.name}"
        k = self.slot(lop, key, "int", tname, atype)
        self.int_op(n, "uInt32", f.optional, lop, pm, bit, k, f"{f.name} length")
        items = list(expand(f.fields, tname, f.type_ref or atype, self.templates))
        nb = segment_bits(items)
        if f.optional:
            w(f"if {n} is None: {t} = None")
            w("else:")
            w.level += 1
        if nb or any(_reads_bytes(x) for x, _, _ in items):
            w(f"if {n} > len(data) - i: "
              f"{self.raise_(f'{f.name}: sequence length exceeds the data', 'D2')}")
        else:
            w(f"if {n} > 65536: {self.raise_(f'{f.name}: sequence too long', 'D2')}")
        w(f"{t} = []")
        w(f"for _ in range({n}):")
        with w.indent():
            pv = w.var("p") if nb else pm
            if nb:
                self.read_pmap(pv, nb, f"{f.name} element")
            pairs = self.segment(items, pv, 0)
            w(f"{t}.append({self.dict_literal(pairs)})")
        if f.optional:
            w.level -= 1

    def group(self, f: GroupField, t, pm, bit, tname, atype) -> None:
        w = self.w
        items = list(expand(f.fields, tname, f.type_ref or atype, self.templates))
        nb = segment_bits(items)
        if f.optional:
            w(f"if not {pm} & {1 << bit}: {t} = None")
            w("else:")
            w.level += 1
        pv = w.var("p") if nb else pm
        if nb:
            self.read_pmap(pv, nb, f"group {f.name}")
        pairs = self.segment(items, pv, 0)
        w(f"{t} = {self.dict_literal(pairs)}")
        if f.optional:
            w.level -= 1

    # ------------------------------------------------------------------ templates
    def template(self, t: Template, fresh: bool) -> tuple[str, int]:
        """``fresh``: the variant for a message decoded with fresh dictionaries, whose
        entries are then plain local variables (no list, no reset)."""
        w = self.w
        self.fresh, self.used = fresh, set()
        fname = f"decode_{'fresh_' if fresh else ''}{t.id}"
        items = list(expand(t.fields, t.name, t.type_ref, self.templates))
        w(f"def {fname}(data, i, pm0{'' if fresh else ', D'}):")
        with w.indent():
            mark = len(w.lines)
            pairs = self.segment(items, "pm0", 1)
            w(f"return {self.dict_literal(pairs)}, i")
        if self.used:
            w.lines.insert(mark, "    " + " = ".join(f"d{k}" for k in sorted(self.used)) + " = U")
        w("")
        self.fresh = False
        return fname, 1 + segment_bits(items)


def _reads_bytes(f) -> bool:
    """True when a field always consumes at least one byte of the stream."""
    if isinstance(f, (IntegerField, StringField, ByteVectorField)):
        return f.operator.kind in ("none", "delta")
    if isinstance(f, DecimalField):
        return (f.operator.kind in ("none", "delta")) if not f.individual else \
            f.exponent.kind in ("none", "delta")
    if isinstance(f, SequenceField):
        return f.length.operator.kind in ("none", "delta")
    return False


