"""FAST 1.1 (FIX Adapted for STreaming) codec driven by a template XML file.

Public API::

    templates = Templates.load("spec/fast-templates.xml")
    enc = Encoder(templates); data = enc.encode("MarketDataIncrementalRefresh", values)
    dec = Decoder(templates); template, values, consumed = dec.decode(data)
    enc.reset(); dec.reset()                         # dictionaries back to undefined
    enc.encode_datagram(...) / dec.decode_datagram(...)   # 4-byte LE MsgSeqNum + message,
                                                          # fresh dictionaries per datagram

Two implementations with one contract: the compiled interpreter (``vm.py`` compiles the
templates into a program that ``_fastvm.c`` runs; the default when the extension is
built) and the generated-Python reference (``Encoder(..., impl="python")``; the fallback
otherwise).  See encoder.py and decoder.py for why, and ``spec/fast-wire.md`` for the
wire format and the exchange's templates.
"""

from .decoder import Decoder
from .encoder import Encoder
from .errors import FastError, TemplateError
from .templates import Template, Templates

__all__ = ["Templates", "Template", "Encoder", "Decoder", "FastError", "TemplateError"]
