"""FAST 1.1 encoder compiled from templates.

Contract:

* ``Encoder(templates)``; ``encode(template, values) -> bytes`` encodes one message
  (``template`` is a template id or name) with the encoder's dictionaries, carried from
  message to message; ``encode_datagram(template, values, seqnum)`` returns a
  Moscow-Exchange-style datagram (4-byte little-endian MsgSeqNum, then the message
  encoded with fresh dictionaries); ``reset()`` sets every dictionary entry to undefined.
* ``values`` is a dict keyed by field name: ``int``; ``str`` for strings; ``bytes``
  (or bytearray/memoryview) for byte vectors; ``Decimal``, ``int`` or an exact
  ``(mantissa, exponent)`` pair for decimals (never a float); a list of dicts for a
  sequence; a dict for a group; ``None`` (or a missing key) for an absent optional field.
  A mandatory field with a constant or default operator may be omitted (it then takes
  the initial value).  Keys that are not fields are ignored.
* The encoder always takes the cheapest encoding the operators allow (a copy, increment
  or tail value equal to what the decoder will infer is left out of the stream; a string
  delta keeps the longest common prefix, or with ``front_deltas=True`` also considers
  the common suffix).
* Every failure is a ``FastError`` naming the template and field: a missing mandatory
  field, a wrong type, an integer outside its type (``D2``), a decimal outside exponent
  [-63, 63] / int64 mantissa (``R1``), a value an operator cannot express (``D3``), a
  non-ASCII character in an ASCII string.  After a failure the dictionaries may hold
  part of the failed message: ``reset()`` before going on (and signal the reset to the
  decoder; the per-datagram convention does this anyway).

Why generated code: as in the decoder, a generic interpreter over field objects is several
times too slow for the 200,000 messages/s target, so each template is compiled once
(_encoder_gen.py) into straight-line Python functions (``compile()`` of generated
source) with constant presence-map masks, inline one- to four-byte integer paths,
memoised ASCII encodings and constant dictionary slots.  Every template gets two: one
keeping dictionaries in a list across messages (``encode``), and one for the datagram
path whose dictionary entries are plain local variables, fresh for every message
(``encode_datagram``: no reset, no list indexing).
"""

from __future__ import annotations

from ._codegen import compile_source
from ._encoder_gen import EncoderGen
from .dictionary import Layout, State
from .errors import FastError
from .templates import Template, Templates
from .values import delta_back, delta_of

__all__ = ["Encoder"]


class Encoder:
    """Encodes FAST messages for a set of templates (see the module docstring).

    ``front_deltas``: let string and byte-vector deltas remove and add at the front
    (negative subtraction length) when that is shorter.  It is valid FAST, but mFAST
    decodes such a delta wrongly when its base is a previous value (tests/test_fast_golden
    .py), so by default deltas only ever work at the back.
    """

    def __init__(self, templates: Templates, front_deltas: bool = False) -> None:
        self.templates = templates
        self.front_deltas = front_deltas
        layout = Layout()
        gen = EncoderGen(templates, layout)
        gen.ns["DELTA"] = delta_of if front_deltas else delta_back
        names = [(t, gen.template(t, False), gen.template(t, True)) for t in templates]
        self.source = gen.w.source()
        ns = compile_source(self.source, gen.ns, f"<fast encoder {templates.source}>")
        self._fns: dict = {}
        self._fresh: dict = {}
        for t, fname, fresh in names:
            self._fns[t.id] = self._fns[t.name] = (ns[fname], t)
            self._fresh[t.id] = self._fresh[t.name] = (ns[fresh], t)
        self._state = State(len(layout))
        self._D = self._state.values

    def reset(self) -> None:
        """Set every dictionary entry to undefined."""
        self._state.reset()

    def encode(self, template: int | str, values: dict) -> bytes:
        """Encode one message of ``template`` (id or name) with the encoder's
        dictionaries, carried from message to message."""
        try:
            fn, t = self._fns[template]
        except (KeyError, TypeError):
            raise FastError(f"unknown template {template!r}", "D9") from None
        try:
            return fn(values, self._D)
        except Exception as exc:
            raise _failure(t, exc) from None

    def encode_datagram(self, template: int | str, values: dict, seqnum: int | None = None
                        ) -> bytes:
        """A datagram: 4-byte little-endian MsgSeqNum (default ``values["MsgSeqNum"]``),
        then the message encoded with fresh dictionaries (the state ``encode()`` uses is
        left alone)."""
        try:
            fn, t = self._fresh[template]
        except (KeyError, TypeError):
            raise FastError(f"unknown template {template!r}", "D9") from None
        if seqnum is None:
            seqnum = values.get("MsgSeqNum")
            if seqnum is None:
                raise FastError("encode_datagram needs a seqnum or a MsgSeqNum field")
        try:
            prefix = seqnum.to_bytes(4, "little")
        except (OverflowError, AttributeError):
            raise FastError(f"datagram sequence number {seqnum!r} does not fit 4 bytes") from None
        try:
            return prefix + fn(values)
        except Exception as exc:
            raise _failure(t, exc) from None


def _failure(t: Template, exc: Exception) -> FastError:
    if isinstance(exc, FastError):
        return FastError(f"{t.name}: {exc}")
    if isinstance(exc, KeyError):
        return FastError(f"{t.name}: missing mandatory field {exc.args[0]!r}")
    if isinstance(exc, (TypeError, ValueError, AttributeError, OverflowError, IndexError)):
        return FastError(f"{t.name}: invalid value ({exc})")
    raise exc
