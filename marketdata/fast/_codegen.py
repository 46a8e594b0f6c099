"""Shared machinery for compiling templates into Python source (used by encoder.py and
decoder.py).

Contract:

* ``Writer`` accumulates indented source lines; ``compile_source`` turns the text into
  functions inside a namespace of helpers and constants (``Writer.const`` interns any
  Python object, e.g. a ``Decimal`` or ``bytes`` initial value, under a generated name).
* ``expand`` inlines static template references: it yields ``(field, template, app_type)``
  for each field of a segment, where ``template``/``app_type`` are the current template
  name and application type for the ``template`` and ``type`` dictionaries (spec 6.1,
  6.4: a static reference makes the referenced template current).
* ``bits`` is the number of presence-map bits a field allocates in its enclosing segment
  (spec 10.5.1); a group or sequence element has a presence map iff its fields need any.
* ``slot`` resolves an operator's dictionary entry to its index in the flat state list.
"""

from __future__ import annotations

from .dictionary import Layout
from .templates import (
    ByteVectorField, DecimalField, GroupField, IntegerField, Operator, SequenceField,
    StringField, TemplateRef, Templates,
)

__all__ = ["Writer", "expand", "bits", "op_bits", "segment_bits", "slot", "value_kind"]


class Writer:
    """Indented source text plus a constants namespace."""

    def __init__(self, namespace: dict) -> None:
        self.lines: list[str] = []
        self.level = 0
        self.ns = namespace
        self._const_ids: dict[int, str] = {}
        self._counter = 0

    def __call__(self, line: str) -> None:
        self.lines.append("    " * self.level + line)

    def indent(self) -> "_Indent":
        return _Indent(self)

    def var(self, prefix: str = "v") -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def const(self, value: object) -> str:
        """A name bound to ``value`` in the generated code's namespace."""
        if value is None or isinstance(value, (bool, int)):
            return repr(value)
        key = id(value)
        name = self._const_ids.get(key)
        if name is None:
            name = f"K{len(self._const_ids)}"
            self._const_ids[key] = name
            self.ns[name] = value
            self.ns.setdefault("_keep", []).append(value)  # keep id() stable
        return name

    def source(self) -> str:
        return "\n".join(self.lines) + "\n"


class _Indent:
    def __init__(self, w: Writer) -> None:
        self.w = w

    def __enter__(self) -> None:
        self.w.level += 1

    def __exit__(self, *exc) -> None:
        self.w.level -= 1


def compile_source(source: str, namespace: dict, filename: str) -> dict:
    code = compile(source, filename, "exec")
    exec(code, namespace)
    return namespace


def expand(fields, template: str, app_type: str | None, templates: Templates):
    """Yield ``(field, template_name, app_type)`` with static templateRefs inlined."""
    for f in fields:
        if isinstance(f, TemplateRef):
            t = templates.by_name[f.template]
            yield from expand(t.fields, t.name, t.type_ref or app_type, templates)
        else:
            yield f, template, app_type


def op_bits(op: Operator | None, optional: bool) -> int:
    if op is None:
        return 0
    if op.needs_bit or (op.kind == "constant" and optional):
        return 1
    return 0


def bits(f) -> int:
    """Presence-map bits that field ``f`` allocates in its enclosing segment."""
    if isinstance(f, (IntegerField, StringField, ByteVectorField)):
        return op_bits(f.operator, f.optional)
    if isinstance(f, DecimalField):
        if f.individual:
            return op_bits(f.exponent, f.optional) + op_bits(f.mantissa, False)
        return op_bits(f.operator, f.optional)
    if isinstance(f, SequenceField):
        return op_bits(f.length.operator, f.optional)
    if isinstance(f, GroupField):
        return 1 if f.optional else 0
    raise TypeError(f"unexpected field {f!r}")  # pragma: no cover


def segment_bits(items) -> int:
    return sum(bits(f) for f, _, _ in items)


def value_kind(f, part: str | None = None) -> str:
    """The kind of value a field's dictionary entry holds."""
    if isinstance(f, IntegerField) or part in ("exponent", "mantissa", "length"):
        return "int"
    if isinstance(f, DecimalField):
        return "decimal"
    if isinstance(f, StringField):
        return f.charset
    if isinstance(f, ByteVectorField):
        return "bytes"
    raise TypeError(f"no dictionary value for {f!r}")  # pragma: no cover


def slot(layout: Layout, op: Operator, default_key: str, kind: str, template: str,
         app_type: str | None) -> int:
    return layout.slot(op.dictionary, op.key or default_key, kind, template, app_type)


def needs_state(op: Operator | None) -> bool:
    return op is not None and op.kind in ("copy", "increment", "delta", "tail")
