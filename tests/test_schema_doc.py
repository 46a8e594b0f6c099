"""The protocol document embeds the schema generated from the structs; they must agree."""
from pathlib import Path

from engine.schema_doc import BEGIN, END, render

SPEC = Path(__file__).resolve().parent.parent / "spec" / "engine-protocol.md"


def test_spec_schema_matches_code():
    text = SPEC.read_text()
    embedded = text[text.index(BEGIN):text.index(END) + len(END)] + "\n"
    assert embedded == render(), (
        "spec/engine-protocol.md is stale: replace its schema section with the output of "
        "python -m engine.schema_doc")
