"""Golden tests: datagrams from our encoder, decoded by an independent FAST decoder.

The reference is mFAST (Object Computing's C++ FAST library) through the PyPI package
``mfast-decoder``, which ships a CPython 3.8 wheel only.  The first run builds a Python 3.8
virtual environment in ``.venv-fast38/`` at the repository root (from the Python 3.8 that
pyenv provides; the directory carries its own ``.gitignore``) and installs the package
there; later runs reuse it.  tests/fast_golden_helper.py runs inside it, decoding each
datagram with a fresh mFAST decoder (fresh dictionaries, as the exchange resets them per
datagram) and printing mFAST's JSON, which is compared field by field, decimals digit
for digit.  Without Python 3.8 or the package the tests skip, saying why.

Known mFAST 1.3 (mfast-decoder 0.0.2) deviations from FAST 1.1, kept out of the exchange
templates and of the generated values, and pinned by ``test_known_mfast_deviations``:

* decimal initial values: a fractional literal (``value="0.01"``) does not parse; an
  optional decimal's initial value is ignored (the field comes out absent) and so is a
  delta's decimal base;
* an optional group that is the only presence-map user of a group or sequence element
  allocates no bit in mFAST (spec 10.5.1 gives it one), so such an element is misread;
* a string or byte-vector delta that adds at the front (negative subtraction length,
  the spec's "ESM6" -> "RSESM6" example) is applied wrongly when its base is the previous
  value: mFAST skips moving the old bytes when the buffer is shared.  Our Encoder
  therefore only makes back deltas unless ``front_deltas=True``;
* a decimal mantissa with the copy or increment operator that is not in the stream (taken
  from the dictionary) comes out with exponent 0, whatever the exponent was;
* integer deltas are limited to int64 (spec 6.3.7.1 allows wider ones for uInt64);
* a decimal's exponent cannot have the increment operator (its decoder skips the field);
* an empty sequence in a template crashes its template parser, and field names shared
  by fields of different types in one dictionary are refused (we keep them apart).

mFAST's JSON prints byte vectors as hex with only the first byte zero-padded ("0" for an
empty vector); the comparison reproduces that.

The datagrams come from the default Encoder (the compiled one when it is built); every
one is also encoded by the generated-Python reference, which must give the same bytes,
and our own decoding is checked with both implementations.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import random
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from marketdata.fast import Decoder, Encoder, Templates, vm
from marketdata.fast.templates import DecimalField, IntegerField, SequenceField
from tests.test_fast_codec import (
    DEC_PAIRS, SPEC, TYPE_OPS, RandomSource, ValueGen, _fit_individual, combo_templates,
    expected, individual_templates, scalar_xml,
)

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-fast38"
HELPER = Path(__file__).with_name("fast_golden_helper.py")
PACKAGE = "mfast-decoder"


# ====================================================================== environment


def _python38_candidates():
    roots = []
    try:
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30)
        roots.append(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    roots += [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]
    seen = set()
    for root in filter(None, roots):
        for exe in sorted(glob.glob(os.path.join(root, "versions", "3.8.*", "bin", "python3.8")),
                          reverse=True):
            if exe not in seen:
                seen.add(exe)
                yield exe, None
    exe = shutil.which("python3.8")
    if exe:
        versions = sorted(glob.glob(os.path.join(roots[-1], "versions", "3.8.*")), reverse=True)
        yield exe, os.path.basename(versions[0]) if versions else None


def _runs(cmd, env=None, timeout=60) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, env=env).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _find_python38():
    for exe, pyenv_version in _python38_candidates():
        env = dict(os.environ)
        if pyenv_version:
            env["PYENV_VERSION"] = pyenv_version  # a pyenv shim needs it
        if _runs([exe, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"], env):
            return exe, env
    return None, None


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _has_mfast(py: Path) -> bool:
    return py.exists() and _runs([str(py), "-c", "import mfast_decoder._core"])


@pytest.fixture(scope="module")
def mfast_python() -> Path:
    py = _venv_python()
    if _has_mfast(py):
        return py
    base, env = _find_python38()
    if base is None:
        pytest.skip("mFAST golden tests need Python 3.8 (pyenv versions/3.8.*): not found")
    made = subprocess.run([base, "-m", "venv", "--clear", str(VENV)], capture_output=True,
                          text=True, env=env, timeout=300)
    if made.returncode:
        pytest.skip(f"cannot create the Python 3.8 venv: {made.stderr.strip()[-300:]}")
    (VENV / ".gitignore").write_text("*\n")
    try:
        pip = subprocess.run([str(py), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", PACKAGE],
                             capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing {PACKAGE} into the Python 3.8 venv timed out")
    if pip.returncode or not _has_mfast(py):
        pytest.skip(f"{PACKAGE} is not installable here: {pip.stderr.strip()[-300:]}")
    return py


def run_mfast(py: Path, templates_path: Path, datagrams: list[bytes]) -> list[dict]:
    request = json.dumps({"templates": str(templates_path), "cases": [d.hex() for d in datagrams]})
    out = subprocess.run([str(py), str(HELPER)], input=request, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# ====================================================================== mFAST's JSON forms


def mfast_bytes(b: bytes) -> str:
    """mFAST's byte-vector text: hex, only the first byte zero-padded (setw applies once),
    dashes in 16-byte vectors (taken for UUIDs), "0" when empty."""
    if not b:
        return "0"
    out = []
    for i, x in enumerate(b):
        if len(b) == 16 and i in (4, 6, 8, 10):
            out.append("-")
        out.append(f"{x:02x}" if i == 0 else f"{x:x}")
    return "".join(out)


def mfast_decimal(m: int, e: int) -> str:
    """mFAST's decimal text: no exponent notation, every digit of the mantissa kept."""
    if e >= 0:
        return str(m) + "0" * e
    digits = str(abs(m))
    sign = "-" if m < 0 else ""
    n = len(digits)
    if n + e > 0:
        return f"{sign}{digits[:n + e]}.{digits[n + e:]}"
    return f"{sign}0.{'0' * (-e - n)}{digits}"


def canon(v):
    """Our decoded values in the shape of mFAST's JSON (parsed with numbers as text)."""
    if isinstance(v, dict):
        return {k: canon(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [canon(x) for x in v]
    if isinstance(v, tuple):
        return mfast_decimal(*v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, bytes):
        return mfast_bytes(v)
    return v


def parse_mfast(text: str):
    return json.loads(text, parse_int=str, parse_float=str, strict=False)


IMPLS = ["c", "python"] if vm.available() else ["python"]


class BothEncoders:
    """The default Encoder, checked byte for byte against the reference encoder."""

    def __init__(self, templates: Templates, **kw) -> None:
        self.default = Encoder(templates, **kw)
        self.reference = Encoder(templates, impl="python", **kw)

    def reset(self) -> None:
        self.default.reset()
        self.reference.reset()

    def encode(self, *args) -> bytes:
        data = self.default.encode(*args)
        assert data == self.reference.encode(*args)
        return data

    def encode_datagram(self, *args, **kw) -> bytes:
        data = self.default.encode_datagram(*args, **kw)
        assert data == self.reference.encode_datagram(*args, **kw)
        return data


def compare(templates: Templates, sent, result: dict) -> None:
    """``sent``: list of (template, values) encoded in one datagram."""
    assert "error" not in result, result
    assert result["rest"] == 0
    assert len(result["messages"]) == len(sent)
    for (t, values), msg in zip(sent, result["messages"]):
        assert (msg["id"], msg["name"]) == (t.id, t.name)
        want = canon(expected(templates, t.fields, values))
        got = parse_mfast(msg["json"])
        assert got == want, f"{t.name}: mFAST {msg['json']}"


# ====================================================================== tests


def test_every_exchange_template(mfast_python):
    """Random messages of every template in spec/fast-templates.xml, one per datagram."""
    templates = Templates.load(SPEC)
    enc = BothEncoders(templates)
    ours = [Decoder(templates, decimals="pair", impl=impl) for impl in IMPLS]
    gen = ValueGen(templates, RandomSource(random.Random(20231123)), mfast_safe=True)
    sent, datagrams = [], []
    for t in templates:
        for k in range(40):
            values = gen.message(t)
            dg = enc.encode_datagram(t.id, values, seqnum=len(datagrams) + 1)
            for dec in ours:
                assert dec.decode_datagram(dg)[2] == expected(templates, t.fields, values)
            sent.append([(t, values)])
            datagrams.append(dg)
    results = run_mfast(mfast_python, SPEC, datagrams)
    for k, (msgs, res) in enumerate(zip(sent, results)):
        assert res.get("seqnum") == k + 1
        compare(templates, msgs, res)


def test_streams_keep_dictionaries_across_messages(mfast_python):
    """Several messages per datagram, encoded without resets: copy, increment, delta and
    tail state carries from message to message, as mFAST's one decoder per datagram."""
    templates = Templates.load(SPEC)
    rng = random.Random(7)
    gen = ValueGen(templates, RandomSource(rng), mfast_safe=True)
    tpls = list(templates)
    sent, datagrams = [], []
    enc = BothEncoders(templates)
    for k in range(40):
        enc.reset()
        msgs = []
        for _ in range(rng.randint(2, 8)):
            t = rng.choice(tpls)
            msgs.append((t, gen.message(t)))
        body = b"".join(enc.encode(t.id, v) for t, v in msgs)
        datagrams.append((k + 1).to_bytes(4, "little") + body)
        sent.append(msgs)
    for msgs, res in zip(sent, run_mfast(mfast_python, SPEC, datagrams)):
        compare(templates, msgs, res)


def _operator_matrix(tmp_path):
    """Every field type x operator x presence (and the individual decimal operators), in
    the forms mFAST supports, as one template file."""
    parts = []
    tid = 1
    for t, op in TYPE_OPS:
        ts = combo_templates(t, op)
        xml = _template_xml(ts[1], tid, f"{t}_{op}", skip_decimal_initial=(t == "decimal"))
        parts.append(xml)
        tid += 1
    for eop, mop in DEC_PAIRS:
        if eop == "increment":
            continue  # mFAST has no increment for a decimal's exponent
        ts = individual_templates(eop, mop)
        if ts is None:
            continue
        parts.append(_template_xml(ts[2], tid, f"dec_{eop}_{mop}", skip_decimal_initial=True))
        tid += 1
    path = tmp_path / "matrix.xml"
    path.write_text('<templates xmlns="http://www.fixprotocol.org/ns/fast/td/1.1">'
                    + "".join(parts) + "</templates>")
    return path


def _template_xml(t, tid: int, name: str, skip_decimal_initial: bool) -> str:
    """Re-serialise a generated test template, dropping what mFAST cannot handle."""
    def field(f):
        if isinstance(f, SequenceField):
            inner = "".join(x for x in map(field, f.fields) if x)
            # (an empty sequence crashes mFAST's template parser)
            return f'<sequence name="{f.name}">{inner}</sequence>' if inner else ""
        if isinstance(f, DecimalField):
            if f.individual:
                if f.exponent.value is not None or f.mantissa.value is not None:
                    return ""  # mFAST applies individual initial values wrongly
                def part(tag, op):
                    return "" if op.kind == "none" else f"<{tag}><{op.kind}/></{tag}>"
                pres = ' presence="optional"' if f.optional else ""
                return (f'<decimal name="{f.name}"{pres}>{part("exponent", f.exponent)}'
                        f'{part("mantissa", f.mantissa)}</decimal>')
            if skip_decimal_initial and f.operator.value is not None:
                return ""
            init = None if f.operator.value is None else mfast_decimal(*f.operator.value)
            return scalar_xml(f.name, "decimal", f.operator.kind, f.optional, init)
        if isinstance(f, IntegerField):
            return scalar_xml(f.name, f.type, f.operator.kind, f.optional, f.operator.value)
        kind = "byteVector" if not hasattr(f, "charset") else f.charset
        init = f.operator.value
        if isinstance(init, bytes):
            init = init.hex()
        return scalar_xml(f.name, kind, f.operator.kind, f.optional, init)

    body = "".join(x for x in map(field, t.fields) if x)
    # template-scoped dictionaries: the same field names have other types elsewhere
    return (f'<template name="{name}" id="{tid}" dictionary="template">{body}'
            f'<uInt32 name="pad"/></template>')


def test_operator_matrix(mfast_python, tmp_path):
    path = _operator_matrix(tmp_path)
    templates = Templates.load(path)
    rng = random.Random(11)
    gen = ValueGen(templates, RandomSource(rng), mfast_safe=True)
    sent, datagrams = [], []
    enc = BothEncoders(templates)
    for t in templates:
        for k in range(6):
            enc.reset()
            msgs = [(t, gen.message(t)) for _ in range(rng.randint(1, 3))]
            for _, v in msgs:
                _fit_individual(t.fields, v)
            body = b"".join(enc.encode(t.id, v) for _, v in msgs)
            datagrams.append(b"\x01\x00\x00\x00" + body)
            sent.append(msgs)
    for msgs, res in zip(sent, run_mfast(mfast_python, path, datagrams)):
        compare(templates, msgs, res)


def test_known_mfast_deviations(mfast_python, tmp_path):
    """Pin the mFAST deviations listed in the module docstring, with our spec reading."""
    path = tmp_path / "dev.xml"
    path.write_text(
        '<templates xmlns="http://www.fixprotocol.org/ns/fast/td/1.1">'
        '<template name="OptDecimalDefault" id="1">'
        '<decimal name="X" presence="optional"><default value="10"/></decimal></template>'
        '<template name="OptionalGroupOnly" id="2"><sequence name="S">'
        '<group name="G" presence="optional"><uInt32 name="Y"/></group></sequence></template>'
        '<template name="FrontDelta" id="3"><string name="X"><delta/></string></template>'
        '<template name="MantissaCopy" id="4"><decimal name="X"><mantissa><copy/></mantissa>'
        '</decimal></template>'
        '</templates>')
    templates = Templates.load(path)
    enc = BothEncoders(templates, front_deltas=True)
    cases = [
        ("OptDecimalDefault", {"X": Decimal("1E+1")}),   # equals the default: bit 0
        ("OptionalGroupOnly", {"S": [{"G": None}, {"G": {"Y": 3}}]}),
    ]
    datagrams = [enc.encode_datagram(name, v, seqnum=1) for name, v in cases]
    enc.reset()
    stream = b"".join(enc.encode("FrontDelta", {"X": v}) for v in ("ESM6", "RSESM6"))
    datagrams.append(b"\x01\x00\x00\x00" + stream)
    ours = Decoder(templates, decimals="pair")
    assert ours.decode_datagram(datagrams[0])[2] == {"X": (1, 1)}  # spec: the initial value
    assert ours.decode_datagram(datagrams[1])[2] == cases[1][1]
    assert [ours.decode(stream, n)[1]["X"] for n in (0, 2 + 5)] == ["ESM6", "RSESM6"]
    res = run_mfast(mfast_python, path, datagrams)
    assert parse_mfast(res[0]["messages"][0]["json"]) == {}   # mFAST: absent
    assert "error" in res[1] or parse_mfast(res[1]["messages"][0]["json"]) != canon(
        cases[1][1])
    front = [parse_mfast(m["json"])["X"] for m in res[2]["messages"]]
    assert front[0] == "ESM6" and front[1] != "RSESM6"        # mFAST: "RSSM6"-like garbage
    enc.reset()
    stream = b"".join(enc.encode("MantissaCopy", {"X": v}) for v in ((5, -1), (5, -2)))
    assert [v["X"] for v in _decode_all(ours, stream)] == [(5, -1), (5, -2)]
    res = run_mfast(mfast_python, path, [b"\x01\x00\x00\x00" + stream])
    assert [parse_mfast(m["json"])["X"] for m in res[0]["messages"]] == ["0.5", "5"]


def _decode_all(dec, data):
    out, n = [], 0
    while n < len(data):
        _, values, used = dec.decode(data, n)
        out.append(values)
        n += used
    return out


def test_helper_is_python38_compatible():
    """The helper runs under Python 3.8 even where these tests skip: keep its syntax 3.8."""
    ast.parse(HELPER.read_text(), str(HELPER), feature_version=(3, 8))
