"""FAST 1.1 encoder compiled from templates.

Contract:

* ``Encoder(templates, front_deltas=False, impl="auto")``; ``encode(template, values) ->
  bytes`` encodes one message (``template`` is a template id or name) with the encoder's
  dictionaries, carried from message to message; ``encode_datagram(template, values,
  seqnum)`` returns a Moscow-Exchange-style datagram (4-byte little-endian MsgSeqNum, then
  the message encoded with fresh dictionaries); ``reset()`` sets every dictionary entry
  to undefined.
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
  non-ASCII character in an ASCII string.  ``code`` carries the FAST code where one
  applies.  After a failure the dictionaries may hold part of the failed message:
  ``reset()`` before going on (and signal the reset to the decoder; the per-datagram
  convention does this anyway).
* ``impl`` selects the implementation: ``"c"`` the compiled interpreter (vm.py,
  _fastvm.c), ``"python"`` the generated-Python reference, ``"auto"`` (default) the
  compiled one when the extension is built, else Python.  ``.impl`` says which one runs.
  Both produce the same bytes and raise the same error codes (tests/test_fast_vm.py).
  The compiled one is stricter about types: an integer field takes an ``int`` (or
  ``bool``) only, where the reference lets another number through when it equals the
  constant, default or previous value; an ill-typed value is reported as such even where
  the reference first trips over something else (e.g. a tail's length, ``D3``).  A
  ``dict`` subclass or other mapping is read as the reference reads it (``V[name]`` for
  mandatory fields, ``V.get(name)`` otherwise).

Why C: the feed needs more than 200,000 messages/s through one core (about 5 us a
message, Python objects in and out included).  A generic interpreter in Python is several
times too slow; the generated straight-line Python below (_encoder_gen.py: constant
presence-map masks, inline integer paths, constant dictionary slots, one function per
template and per path) reaches about 135,000 messages/s for a three-entry incremental
refresh, and what is left is the cost of the Python interpreter itself.  No FAST library
reaches the rate from Python with this contract, so the hot path is a hand-written C
interpreter walking a program compiled from the templates (_fastvm.c).  The generated
Python stays as the reference implementation the C one is tested against, and as the
fallback where the extension is not built.
"""

from __future__ import annotations

from ._codegen import compile_source
from ._encoder_gen import EncoderGen
from .dictionary import Layout, State
from .errors import FastError
from .templates import Template, Templates
from .values import delta_back, delta_of
from .vm import make_vm

__all__ = ["Encoder"]


class Encoder:
    """Encodes FAST messages for a set of templates (see the module docstring).

    ``front_deltas``: let string and byte-vector deltas remove and add at the front
    (negative subtraction length) when that is shorter.  It is valid FAST, but mFAST
    decodes such a delta wrongly when its base is a previous value (tests/test_fast_golden
    .py), so by default deltas only ever work at the back.
    """

    def __init__(self, templates: Templates, front_deltas: bool = False,
                 impl: str = "auto") -> None:
        if impl not in ("auto", "c", "python"):
            raise ValueError("impl must be 'auto', 'c' or 'python'")
        self.templates = templates
        self.front_deltas = front_deltas
        self._vm = None
        if impl != "python":
            self._vm = make_vm(templates, front_deltas=front_deltas, required=impl == "c")
        if self._vm is not None:
            self.impl = "c"
            # the compiled methods straight on the instance: no Python frame per message
            self.encode = self._vm.encode
            self.encode_datagram = self._vm.encode_datagram
            self.reset = self._vm.reset
            return
        self.impl = "python"
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
        if self._vm is not None:
            return self._vm.reset()
        self._state.reset()

    def encode(self, template: int | str, values: dict) -> bytes:
        """Encode one message of ``template`` (id or name) with the encoder's
        dictionaries, carried from message to message."""
        if self._vm is not None:
            return self._vm.encode(template, values)
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
        if self._vm is not None:
            return self._vm.encode_datagram(template, values, seqnum)
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
        msg = str(exc)
        if exc.code:  # keep the code, once
            msg = msg.removeprefix(f"[ERR {exc.code}] ")
        return FastError(f"{t.name}: {msg}", exc.code)
    if isinstance(exc, KeyError):
        return FastError(f"{t.name}: missing mandatory field {exc.args[0]!r}")
    if isinstance(exc, (TypeError, ValueError, AttributeError, ArithmeticError, IndexError)):
        # (ArithmeticError: e.g. decimal.InvalidOperation comparing a NaN with an int)
        return FastError(f"{t.name}: invalid value ({exc})")
    raise exc
