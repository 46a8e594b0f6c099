"""FAST 1.1 template definitions: parse the standard XML concrete syntax
(namespace ``http://www.fixprotocol.org/ns/fast/td/1.1``) into typed, frozen structures.

Contract:

* ``Templates.load(path)`` / ``Templates.parse(xml_text, source)`` return an immutable
  ``Templates`` set, indexable by template id (int) or name.  Any static error (ERR S1..S5,
  an operator on a type it does not apply to, an unknown static ``templateRef``, a cycle of
  references, duplicate ids, names or field names, an unsupported construct) raises
  ``TemplateError`` naming the file, template and field.
* Field types: ``int32``/``uInt32``/``int64``/``uInt64`` (``IntegerField``), ``decimal``
  with one operator or individual exponent/mantissa operators (``DecimalField``),
  ``string`` ascii/unicode (``StringField``), ``byteVector`` (``ByteVectorField``),
  ``sequence`` with its length field (``SequenceField``), ``group`` (``GroupField``) and
  static ``templateRef`` (``TemplateRef``; dynamic references are rejected).
* Initial values are converted once, at load: integers to ``int``, decimals to a
  normalized ``(mantissa, exponent)`` pair (spec 6.3.2: ``mantissa % 10 != 0``, zero is
  ``(0, 0)``), byte vectors from hex to ``bytes``, strings to ``str``.
* Every operator carries its resolved dictionary name (nearest ``dictionary`` attribute
  on the operator, sequence, group, template or templates element; else ``"global"``)
  and its key (``None`` means the default key, the field's name).  Application types
  (``typeRef``) are kept on templates, groups and sequences for the ``type`` dictionary.
* Namespaces (``ns``/``templateNs``) are accepted and ignored: names are local names.
  Foreign elements and attributes (other namespaces) are ignored, as spec section 9 allows.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterator, Mapping, Union

from .errors import TemplateError
from .primitives import (
    INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, UINT32_MAX, UINT64_MAX,
)

__all__ = [
    "TD_NS", "Operator", "Field", "IntegerField", "DecimalField", "StringField",
    "ByteVectorField", "LengthField", "SequenceField", "GroupField", "TemplateRef",
    "Template", "Templates", "INTEGER_RANGES", "parse_decimal",
]

TD_NS = "http://www.fixprotocol.org/ns/fast/td/1.1"

INTEGER_RANGES = {
    "int32": (INT32_MIN, INT32_MAX),
    "uInt32": (0, UINT32_MAX),
    "int64": (INT64_MIN, INT64_MAX),
    "uInt64": (0, UINT64_MAX),
}
OPERATORS = ("constant", "default", "copy", "increment", "delta", "tail")


# --------------------------------------------------------------------------- structures


@dataclass(frozen=True, slots=True)
class Operator:
    """A field operator.  ``kind`` is ``"none"`` when the field has no operator."""

    kind: str = "none"
    value: object = None  # typed initial value, None when absent
    dictionary: str = "global"
    key: str | None = None

    @property
    def needs_bit(self) -> bool:
        """True when the operator always uses a presence-map bit (spec 10.5.1)."""
        return self.kind in ("default", "copy", "increment", "tail")


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    id: int | str | None
    optional: bool


@dataclass(frozen=True, slots=True)
class IntegerField(Field):
    type: str  # int32 | uInt32 | int64 | uInt64
    operator: Operator


@dataclass(frozen=True, slots=True)
class DecimalField(Field):
    """``operator`` for a single-operator decimal; else ``exponent``/``mantissa``."""

    operator: Operator | None
    exponent: Operator | None = None
    mantissa: Operator | None = None

    @property
    def individual(self) -> bool:
        return self.operator is None


@dataclass(frozen=True, slots=True)
class StringField(Field):
    charset: str  # ascii | unicode
    operator: Operator
    length_name: str | None = None


@dataclass(frozen=True, slots=True)
class ByteVectorField(Field):
    operator: Operator
    length_name: str | None = None


@dataclass(frozen=True, slots=True)
class LengthField:
    """The uInt32 length of a sequence; ``name`` is None for an implicit length."""

    name: str | None
    id: int | str | None
    operator: Operator


@dataclass(frozen=True, slots=True)
class SequenceField(Field):
    length: LengthField
    fields: tuple
    type_ref: str | None = None


@dataclass(frozen=True, slots=True)
class GroupField(Field):
    fields: tuple
    type_ref: str | None = None


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """A static template reference: the named template's fields are inlined here."""

    template: str


AnyField = Union[IntegerField, DecimalField, StringField, ByteVectorField, SequenceField,
                 GroupField, TemplateRef]


@dataclass(frozen=True, slots=True)
class Template:
    id: int
    name: str
    fields: tuple
    dictionary: str | None = None  # the template element's own dictionary attribute
    type_ref: str | None = None

    def __repr__(self) -> str:
        return f"Template(id={self.id}, name={self.name!r}, fields={len(self.fields)})"


class Templates:
    """An immutable set of templates, by id and by name."""

    __slots__ = ("_by_id", "_by_name", "source", "__weakref__")

    def __init__(self, templates, source: str = "<templates>") -> None:
        by_id: dict[int, Template] = {}
        by_name: dict[str, Template] = {}
        for t in templates:
            if t.id in by_id:
                raise TemplateError(f"duplicate template id {t.id}", source, t.name)
            if t.name in by_name:
                raise TemplateError("duplicate template name", source, t.name)
            by_id[t.id] = t
            by_name[t.name] = t
        self._by_id = MappingProxyType(by_id)
        self._by_name = MappingProxyType(by_name)
        self.source = source
        for t in by_id.values():
            _check_refs(self, t, (), source)
        for t in by_id.values():
            _check_names(self, t.fields, t.name, source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Templates":
        """Parse a template XML file."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                text = fh.read()
        except OSError as exc:
            raise TemplateError(f"cannot read template file: {exc.strerror}", path) from None
        return cls.parse(text, source=path)

    @classmethod
    def parse(cls, xml_text: str | bytes, source: str = "<string>") -> "Templates":
        """Parse template XML given as text (str or bytes)."""
        if isinstance(xml_text, str):
            xml_text = xml_text.encode("utf-8")  # lets an encoding declaration through
        try:
            root = ET.fromstring(xml_text)
        except ET.ParseError as exc:
            raise TemplateError(f"not well-formed XML ({exc})", source) from None
        return cls(_Parser(source).document(root), source)

    @property
    def by_id(self) -> Mapping[int, Template]:
        return self._by_id

    @property
    def by_name(self) -> Mapping[str, Template]:
        return self._by_name

    def __getitem__(self, key: int | str) -> Template:
        try:
            return self._by_name[key] if isinstance(key, str) else self._by_id[key]
        except KeyError:
            raise KeyError(f"no template {key!r}") from None

    def __contains__(self, key: object) -> bool:
        return key in self._by_name if isinstance(key, str) else key in self._by_id

    def __iter__(self) -> Iterator[Template]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"Templates({self.source!r}, {len(self)} templates)"


def _check_refs(ts: Templates, t: Template, chain: tuple, source: str) -> None:
    """Static references must name a known template and must not form a cycle."""
    if t.name in chain:
        raise TemplateError(
            "cyclic static templateRef: " + " -> ".join(chain + (t.name,)), source, chain[0])
    stack = list(t.fields)
    while stack:
        f = stack.pop()
        if isinstance(f, TemplateRef):
            if f.template not in ts.by_name:
                raise TemplateError(
                    f"static templateRef to unknown template {f.template!r} (ERR D8)",
                    source, (chain or (t.name,))[0])
            _check_refs(ts, ts.by_name[f.template], chain + (t.name,), source)
        elif isinstance(f, (SequenceField, GroupField)):
            stack.extend(f.fields)


def _check_names(ts: Templates, fields, template: str, source: str) -> None:
    """Field names must stay unique once static templateRefs are inlined."""
    seen: set[str] = set()

    def walk(fs):
        for f in fs:
            if isinstance(f, TemplateRef):
                walk(ts.by_name[f.template].fields)
                continue
            if f.name in seen:
                raise TemplateError("duplicate field name after inlining templateRef",
                                    source, template, f.name)
            seen.add(f.name)
            if isinstance(f, (SequenceField, GroupField)):
                _check_names(ts, f.fields, template, source)

    walk(fields)


# ------------------------------------------------------------------------------ values

_INT_RE = re.compile(r"-?[0-9]+")
_DEC_RE = re.compile(r"(-?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([-+]?[0-9]+))?")
_WS = " \t\r\n"


def parse_decimal(text: str) -> tuple[int, int]:
    """Convert a decimal literal to a normalized ``(mantissa, exponent)`` (spec 6.3.2)."""
    m = _DEC_RE.fullmatch(text.strip(_WS))
    if not m or not (m.group(2) or m.group(3)):
        raise ValueError(f"not a decimal: {text!r}")
    sign, ipart, fpart, exp = m.groups()
    fpart = fpart or ""
    mant = int((ipart or "0") + fpart)
    e = -len(fpart) + int(exp or 0)
    if mant == 0:
        return 0, 0
    while mant % 10 == 0:
        mant //= 10
        e += 1
    if sign:
        mant = -mant
    if not -63 <= e <= 63 or not INT64_MIN <= mant <= INT64_MAX:
        raise ValueError(f"decimal {text!r} outside exponent [-63, 63] / int64 mantissa (ERR R1)")
    return mant, e


def _parse_int(text: str, kind: str) -> int:
    t = text.strip(_WS)
    if not _INT_RE.fullmatch(t):
        raise ValueError(f"not an integer: {text!r}")
    v = int(t)
    lo, hi = INTEGER_RANGES[kind]
    if not lo <= v <= hi:
        raise ValueError(f"{v} outside the {kind} range [{lo}, {hi}]")
    return v


def _parse_hex(text: str) -> bytes:
    t = "".join(text.split())
    if len(t) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", t):
        raise ValueError(f"byteVector value must be an even number of hex digits: {text!r}")
    return bytes.fromhex(t)


def _parse_ascii(text: str) -> str:
    if not text.isascii():
        raise ValueError(f"non-ASCII initial value {text!r} (ERR R3)")
    return text


# ------------------------------------------------------------------------------ parser


def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


class _Parser:
    """Walks the XML tree; keeps the file and current template for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.template: str | None = None

    def err(self, msg: str, field: str | None = None) -> TemplateError:
        return TemplateError(msg, self.source, self.template, field)

    def children(self, el: ET.Element):
        """TD-namespace (or namespace-less) children; foreign elements are skipped."""
        for c in el:
            if not isinstance(c.tag, str):
                continue  # comments, processing instructions
            ns, name = _local(c.tag)
            if ns in (None, TD_NS):
                yield name, c

    def document(self, root: ET.Element) -> list[Template]:
        ns, name = _local(root.tag)
        if ns not in (None, TD_NS):
            raise self.err(f"root element is not in the FAST 1.1 namespace {TD_NS!r}")
        if name == "template":
            return [self.template_el(root, None)]
        if name != "templates":
            raise self.err(f"root element must be <templates> or <template>, not <{name}>")
        out = []
        for cname, c in self.children(root):
            if cname != "template":
                raise self.err(f"unexpected <{cname}> in <templates>")
            out.append(self.template_el(c, root.get("dictionary")))
        return out

    def template_el(self, el: ET.Element, outer_dict: str | None) -> Template:
        name = el.get("name")
        self.template = name
        if not name:
            raise self.err("template without a name")
        tid = el.get("id")
        if tid is None or not tid.strip().isdigit():
            raise self.err(f"template id must be a non-negative integer, got {tid!r}")
        tid_v = int(tid)
        if tid_v > UINT32_MAX:
            raise self.err("template id does not fit a uInt32")
        dictionary = el.get("dictionary") or outer_dict
        type_ref, fields = self.instructions(el, dictionary or "global", allow_length=False)
        t = Template(tid_v, name, fields, el.get("dictionary") or outer_dict, type_ref)
        self.template = None
        return t

    def instructions(self, el: ET.Element, dictionary: str, allow_length: bool):
        """Parse the instruction children of a template, group or sequence element."""
        type_ref = None
        length = None
        fields: list = []
        names: set[str] = set()
        for i, (cname, c) in enumerate(self.children(el)):
            if cname == "typeRef":
                if type_ref is not None or fields:
                    raise self.err("<typeRef> must come first and only once")
                type_ref = c.get("name")
                if not type_ref:
                    raise self.err("<typeRef> without a name")
                continue
            if cname == "length" and allow_length:
                if length is not None or fields:
                    raise self.err("<length> must precede the sequence's instructions",
                                   el.get("name"))
                length = c
                continue
            f = self.instruction(cname, c, dictionary)
            if not isinstance(f, TemplateRef):
                if f.name in names:
                    raise self.err("duplicate field name", f.name)
                names.add(f.name)
            fields.append(f)
        if allow_length:
            return type_ref, length, tuple(fields)
        return type_ref, tuple(fields)

    def instruction(self, kind: str, el: ET.Element, dictionary: str):
        if kind == "templateRef":
            ref = el.get("name")
            if not ref:
                raise self.err("dynamic templateRef (without a name) is not supported")
            return TemplateRef(ref)
        name = el.get("name")
        if not name:
            raise self.err(f"<{kind}> without a name")
        presence = el.get("presence", "mandatory")
        if presence not in ("mandatory", "optional"):
            raise self.err(f"presence must be mandatory or optional, not {presence!r}", name)
        optional = presence == "optional"
        fid = _aux_id(el.get("id"))
        if kind in INTEGER_RANGES:
            op = self.operator(el, name, kind, optional, dictionary, kind)
            return IntegerField(name, fid, optional, kind, op)
        if kind == "decimal":
            return self.decimal(el, name, fid, optional, dictionary)
        if kind == "string":
            charset = el.get("charset", "ascii")
            if charset not in ("ascii", "unicode"):
                raise self.err(f"charset must be ascii or unicode, not {charset!r}", name)
            length_name = self.byte_length(el, name) if charset == "unicode" else None
            op = self.operator(el, name, charset, optional, dictionary, charset)
            return StringField(name, fid, optional, charset, op, length_name)
        if kind == "byteVector":
            length_name = self.byte_length(el, name)
            op = self.operator(el, name, "byteVector", optional, dictionary, "byteVector")
            return ByteVectorField(name, fid, optional, op, length_name)
        if kind == "sequence":
            d = el.get("dictionary") or dictionary
            type_ref, length_el, fields = self.instructions(el, d, allow_length=True)
            length = self.length(length_el, name, optional, d)
            return SequenceField(name, fid, optional, length, fields, type_ref)
        if kind == "group":
            d = el.get("dictionary") or dictionary
            type_ref, fields = self.instructions(el, d, allow_length=False)
            return GroupField(name, fid, optional, fields, type_ref)
        raise self.err(f"unknown instruction <{kind}>", name)

    def byte_length(self, el: ET.Element, name: str) -> str | None:
        for cname, c in self.children(el):
            if cname == "length":
                return c.get("name")
        return None

    def length(self, el: ET.Element | None, seq: str, optional: bool, dictionary: str):
        if el is None:
            return LengthField(None, None, Operator(dictionary=dictionary))
        lname = el.get("name")
        op = self.operator(el, lname or f"{seq}.length", "uInt32", optional, dictionary,
                           "uInt32", field=seq)
        return LengthField(lname, _aux_id(el.get("id")), op)

    def decimal(self, el: ET.Element, name: str, fid, optional: bool, dictionary: str):
        parts = {c: e for c, e in self.children(el) if c in ("exponent", "mantissa")}
        has_op = any(c in OPERATORS for c, _ in self.children(el))
        if parts and has_op:
            raise self.err("decimal has both a field operator and exponent/mantissa", name)
        if not parts:
            op = self.operator(el, name, "decimal", optional, dictionary, "decimal")
            return DecimalField(name, fid, optional, op)
        exp = self.operator(parts["exponent"], name, "int32", optional, dictionary,
                            "exponent") if "exponent" in parts else Operator(
                                dictionary=dictionary)
        mant = self.operator(parts["mantissa"], name, "int64", False, dictionary,
                             "mantissa") if "mantissa" in parts else Operator(
                                 dictionary=dictionary)
        if exp.value is not None and not -63 <= exp.value <= 63:
            raise self.err("exponent initial value outside [-63, 63] (ERR R1)", name)
        return DecimalField(name, fid, optional, None, exp, mant)

    def operator(self, el: ET.Element, name: str, vtype: str, optional: bool,
                 dictionary: str, what: str, field: str | None = None) -> Operator:
        """The field operator child of ``el``; ``vtype`` selects the value conversion."""
        field = field or name
        ops = [(c, e) for c, e in self.children(el) if c in OPERATORS]
        others = [c for c, _ in self.children(el)
                  if c not in OPERATORS and c not in ("length", "exponent", "mantissa")]
        if others:
            raise self.err(f"unexpected <{others[0]}> in {what} field", field)
        if len(ops) > 1:
            raise self.err("more than one field operator", field)
        if not ops:
            return Operator(dictionary=dictionary)
        kind, op_el = ops[0]
        if kind == "increment" and vtype not in INTEGER_RANGES:
            raise self.err(f"increment operator is not applicable to {what} (ERR S2)", field)
        if kind == "tail" and vtype not in ("ascii", "unicode", "byteVector"):
            raise self.err(f"tail operator is not applicable to {what} (ERR S2)", field)
        raw = op_el.get("value")
        value = None
        if raw is not None:
            try:
                value = self.convert(raw, vtype)
            except ValueError as exc:
                raise self.err(f"invalid initial value for {what} (ERR S3): {exc}",
                               field) from None
        if kind == "constant" and value is None:
            raise self.err("constant operator without a value (ERR S4)", field)
        if kind == "default" and value is None and not optional:
            raise self.err("default operator on a mandatory field without a value (ERR S5)",
                           field)
        if kind in ("constant", "default") and (op_el.get("key") or op_el.get("dictionary")):
            raise self.err(f"{kind} operator takes no key or dictionary", field)
        return Operator(kind, value, op_el.get("dictionary") or dictionary, op_el.get("key"))

    @staticmethod
    def convert(raw: str, vtype: str):
        if vtype in INTEGER_RANGES:
            return _parse_int(raw, vtype)
        if vtype == "decimal":
            return parse_decimal(raw)
        if vtype == "ascii":
            return _parse_ascii(raw)
        if vtype == "unicode":
            return raw
        if vtype == "byteVector":
            return _parse_hex(raw)
        raise ValueError(f"unknown type {vtype}")  # pragma: no cover


def _aux_id(raw: str | None) -> int | str | None:
    if raw is None:
        return None
    raw = raw.strip()
    return int(raw) if raw.isdigit() else raw
