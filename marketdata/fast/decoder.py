"""FAST 1.1 decoder compiled from templates.

Contract:

* ``Decoder(templates, strict=True, decimals="decimal", impl="auto")``;
  ``decode(data, offset=0) -> (Template, values, consumed)`` decodes one message starting
  at ``data[offset]`` with the decoder's dictionaries, carried from message to message;
  ``decode_datagram(data) -> (seqnum, Template, values)`` decodes a Moscow-Exchange-style
  datagram (4-byte little-endian MsgSeqNum, then exactly one FAST message) with fresh
  dictionaries; ``reset()`` sets every dictionary entry to undefined.
* ``values`` is a dict with every field of the template, in template order: ``int``,
  ``str``, ``bytes``, ``Decimal`` (or an exact ``(mantissa, exponent)`` pair with
  ``decimals="pair"``), a list of dicts for a sequence, a dict for a group, ``None`` for
  an absent optional field.  Fields of a static ``templateRef`` appear inline.
* Every failure is a ``FastError``: truncated data, an unknown template id (``D9``), an
  operator that cannot produce a value (``D5``/``D6``/``D7``), integers out of range
  (``D2``), invalid UTF-8 in a unicode string (``R2``).  ``strict=True`` also reports
  the spec's other reportable errors (overlong integers ``R6``, presence maps ``R7``/
  ``R8``, strings ``R9``, decimal range ``R1``, delta overflow ``R4``); ``strict=False``
  accepts those.
* ``impl``: ``"c"`` the compiled interpreter (vm.py, _fastvm.c), ``"python"`` the
  generated-Python reference, ``"auto"`` (default) the compiled one when the extension is
  built.  ``.impl`` says which one runs; both return equal values and raise the same
  error codes (tests/test_fast_vm.py).  The compiled one's messages also name the
  template and field; it carries integers in 128 bits, so a lenient decoder's delta
  sums beyond 2**100 (far past any FAST type) are rejected (``R4``/``R1``).

Why C: the feed needs more than 200,000 messages/s through one core (about 5 us a
message, building the result dicts included).  A generic interpreter in Python walking
field objects is several times too slow; the generated straight-line Python below
(_decoder_gen.py: presence-map bits tested with constant masks, one-byte entities by
table lookup, constant dictionary slots, each result dict built by one literal) reaches
about 135,000 messages/s for a three-entry incremental refresh, and what is left is the
cost of the Python interpreter itself.  No FAST library reaches the rate from Python with
this contract, so the hot path is a hand-written C interpreter walking a program compiled
from the templates (_fastvm.c).  The generated Python stays as the reference
implementation the C one is tested against, and as the fallback where the extension is
not built.
"""

from __future__ import annotations

from . import primitives as P
from ._codegen import compile_source
from ._decoder_gen import REV as _REV
from ._decoder_gen import DecoderGen
from .dictionary import TID_SLOT, UNDEFINED, Layout, State
from .errors import FastError
from .templates import Templates
from .vm import make_vm

__all__ = ["Decoder"]

_U_TAB, _MULTI = P.U_TAB, P.MULTI


class Decoder:
    """Decodes FAST messages for a set of templates (see the module docstring)."""

    def __init__(self, templates: Templates, strict: bool = True,
                 decimals: str = "decimal", impl: str = "auto") -> None:
        if decimals not in ("decimal", "pair"):
            raise ValueError("decimals must be 'decimal' or 'pair'")
        if impl not in ("auto", "c", "python"):
            raise ValueError("impl must be 'auto', 'c' or 'python'")
        self.templates = templates
        self.strict = strict
        self._vm = None
        if impl != "python":
            self._vm = make_vm(templates, strict=strict, decimals=decimals,
                               required=impl == "c")
        if self._vm is not None:
            self.impl = "c"
            # the compiled methods straight on the instance: no Python frame per message
            self.decode = self._vm.decode
            self.decode_datagram = self._vm.decode_datagram
            self.reset = self._vm.reset
            return
        self.impl = "python"
        layout = Layout()
        gen = DecoderGen(templates, layout, strict, decimals)
        entries = []
        for t in templates:
            fname, nbits = gen.template(t, fresh=False)
            fresh_name, _ = gen.template(t, fresh=True)
            entries.append((t, fname, fresh_name, nbits))
        self.source = gen.w.source()
        ns = compile_source(self.source, gen.ns, f"<fast decoder {templates.source}>")
        self._by_tid = {t.id: (ns[fname], t, nbits) for t, fname, _, nbits in entries}
        self._fresh = {t.id: (ns[fresh], t, nbits) for t, _, fresh, nbits in entries}
        self._state = State(len(layout))
        self._D = self._state.values

    def reset(self) -> None:
        """Set every dictionary entry to undefined."""
        if self._vm is not None:
            return self._vm.reset()
        self._state.reset()

    def decode(self, data, offset: int = 0):
        """Decode one message at ``data[offset]``: ``(template, values, consumed)``."""
        if self._vm is not None:
            return self._vm.decode(data, offset)
        if data.__class__ is not bytes:
            data = bytes(data)
        D = self._D
        try:
            i = offset
            b = data[i]
            i += 1
            if b & 0x80:
                pm = _REV[b]
            else:
                pm, i = P.read_pmap(data, i - 1, self.strict)
            if pm & 1:
                tid = P.U_TAB[data[i]]
                i += 1
                if tid is P.MULTI:
                    tid, i = P.read_uint(data, i - 1, P.UINT32_MAX, self.strict)
                D[TID_SLOT] = tid
            else:
                tid = D[TID_SLOT]
                if tid is UNDEFINED:
                    raise FastError("message without a template identifier and no previous one",
                                    "D5")
            entry = self._by_tid.get(tid)
            if entry is None:
                raise FastError(f"unknown template id {tid}", "D9")
            fn, template, nbits = entry
            if self.strict and pm >> nbits:
                raise FastError(f"presence map of {template.name} has bits beyond the "
                                f"{nbits} used", "R8")
            values, i = fn(data, i, pm, D)
        except IndexError:
            raise FastError("truncated message: the data ends inside a field") from None
        except UnicodeDecodeError as exc:
            raise FastError(f"invalid UTF-8 in a unicode string ({exc.reason})", "R2") from None
        return template, values, i - offset

    def decode_datagram(self, data):
        """Decode a datagram: 4-byte little-endian MsgSeqNum then exactly one FAST message,
        decoded with fresh dictionaries (the state ``decode()`` uses is left alone).
        Returns ``(seqnum, template, values)``."""
        if self._vm is not None:
            return self._vm.decode_datagram(data)
        if data.__class__ is not bytes:
            data = bytes(data)
        try:
            b = data[4]
            if b & 0x80:
                pm = _REV[b]
                i = 5
            else:
                pm, i = P.read_pmap(data, 4, self.strict)
            if not pm & 1:
                raise FastError("datagram message without a template identifier", "D5")
            tid = _U_TAB[data[i]]
            i += 1
            if tid is _MULTI:
                tid, i = P.read_uint(data, i - 1, P.UINT32_MAX, self.strict)
            fn, template, nbits = self._fresh[tid]
            if pm >> nbits and self.strict:
                raise FastError(f"presence map of {template.name} has bits beyond the "
                                f"{nbits} used", "R8")
            values, i = fn(data, i, pm)
        except IndexError:
            raise FastError("truncated datagram: the data ends inside a field") from None
        except KeyError:
            raise FastError(f"unknown template id {tid}", "D9") from None
        except UnicodeDecodeError as exc:
            raise FastError(f"invalid UTF-8 in a unicode string ({exc.reason})", "R2") from None
        if i != len(data):
            raise FastError(f"datagram has {len(data) - i} bytes after its message")
        return data[0] | data[1] << 8 | data[2] << 16 | data[3] << 24, template, values
