"""Decode FAST datagrams with mFAST (PyPI ``mfast-decoder``), as an independent check.

Runs under the Python 3.8 virtual environment that tests/test_fast_golden.py builds (the
package ships a cp38 wheel only), so it must stay Python 3.8 syntax and import nothing
from this repository.

stdin: JSON ``{"templates": "<path to template XML>", "cases": ["<hex>", ...]}``; each case
is one datagram: a 4-byte little-endian MsgSeqNum, then one or more FAST messages.
stdout: JSON list, one entry per case: ``{"seqnum": n, "messages": [{"id", "name",
"json"}], "rest": bytes_left}`` or ``{"error": "..."}``.  ``json`` is mFAST's own JSON text,
passed through untouched so the caller can compare decimals digit for digit.

Every case gets a fresh mFAST decoder, hence fresh dictionaries: the Moscow Exchange
convention of resetting the dictionaries at every datagram.
"""

import json
import struct
import sys

from mfast_decoder._core import Decoder


def main():
    request = json.load(sys.stdin)
    with open(request["templates"], "r", encoding="utf-8") as fh:
        xml = fh.read()
    out = []
    for case in request["cases"]:
        raw = bytes.fromhex(case)
        try:
            seqnum = struct.unpack_from("<I", raw)[0]
            decoder = Decoder(xml)
            msgs, rest = decoder.decode(raw[4:])
            out.append({
                "seqnum": seqnum,
                "messages": [{"id": m.id, "name": m.name, "json": m.json} for m in msgs],
                "rest": rest,
            })
        except Exception as exc:  # report, keep going with the other cases
            out.append({"error": "%s: %s" % (type(exc).__name__, exc)})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
