"""FIX data dictionaries in the QuickFIX XML format, loaded into frozen, typed structures.

Contract:
- ``load_dictionary(path)`` reads a file, ``parse_dictionary(text, source)`` parses text held in
  memory; both return a ``Dictionary`` and raise nothing but ``DictionaryError``, whose message is
  ``<source>: <element>: <problem>`` (``element`` is an XPath-like location such as
  ``/fix/messages/message[@msgtype='D']/field[@name='Foo']``).
- The format is QuickFIX's: ``<fix major minor [servicepack] [type]>`` with ``<header>``,
  ``<trailer>``, ``<messages>``, optional ``<components>`` and ``<fields>``. Messages, groups
  and components hold ``<field>``, ``<group>`` and ``<component>`` references by name with
  ``required="Y|N"`` (absent = N). Everything is checked: unknown elements, unknown or
  duplicate names and numbers, field types, enum values that do not fit their field's type,
  groups whose counter is not NUMINGROUP (or INT, before FIX 4.3) or whose first member is not
  a field, component cycles, a tag used twice at one level of a message, a header not starting
  with BeginString, BodyLength, MsgType, a trailer without CheckSum (both may be empty, as in
  FIX 5 application dictionaries).
- Components are expanded in place. As in QuickFIX, a member of a component is required only if
  it is marked required and every enclosing component reference is required too; inside a
  group, requirements apply to each entry.
- Every group has a counter (its NUMINGROUP field), a delimiter (its first field, which starts
  every entry) and ordered members; groups nest.
- ``FORMAT_CHECKS`` maps each FIX type to a predicate on the raw value bytes (``None``: any
  non-empty value), shared with ``fix_gateway.validator``.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, Optional, Union

__all__ = [
    "DictionaryError", "FieldDef", "FieldRef", "GroupDef", "MessageDef", "Dictionary",
    "Member", "FORMAT_CHECKS", "MULTI_VALUE_TYPES", "load_dictionary", "parse_dictionary",
]


class DictionaryError(ValueError):
    """A data dictionary that cannot be used; names the file, the element and the problem."""

    def __init__(self, source: str, element: str, problem: str) -> None:
        self.source, self.element, self.problem = source, element, problem
        super().__init__(f"{source}: {element}: {problem}")


# --------------------------------------------------------------------------------------------
# Value formats (FIX 4.4 data types), as predicates over the raw bytes of a value

def _rx(pattern: bytes) -> Callable[[bytes], object]:
    return re.compile(pattern).fullmatch


_DATE = rb"[0-9]{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
_TIME = (rb"(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)"     # leap second allowed
         rb"(?:\.[0-9]{3}(?:[0-9]{3}(?:[0-9]{3})?)?)?")               # ms, us or ns
_TZ = rb"(?:Z|[+-](?:0[0-9]|1[0-4])(?::?[0-5][0-9])?)"
_DECIMAL = _rx(rb"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_INT = _rx(rb"-?[0-9]+")
_MULTI = _rx(rb"[^ ]+(?: [^ ]+)*")

#: FIX type -> predicate on the value bytes (truthy = well formed); None = any non-empty value.
FORMAT_CHECKS: Mapping[str, Optional[Callable[[bytes], object]]] = MappingProxyType({
    "INT": _INT, "DAYOFMONTH": _rx(rb"0?[1-9]|[12][0-9]|3[01]"),
    "LENGTH": bytes.isdigit, "SEQNUM": bytes.isdigit, "NUMINGROUP": bytes.isdigit,
    "TAGNUM": bytes.isdigit,
    "FLOAT": _DECIMAL, "QTY": _DECIMAL, "PRICE": _DECIMAL, "PRICEOFFSET": _DECIMAL,
    "AMT": _DECIMAL, "PERCENTAGE": _DECIMAL,
    "CHAR": _rx(rb"[\x21-\x7e]"), "BOOLEAN": frozenset((b"Y", b"N")).__contains__,
    "STRING": None, "EXCHANGE": None, "LANGUAGE": None, "DATA": None, "XMLDATA": None,
    "XID": None, "XIDREF": None,
    "CURRENCY": _rx(rb"[A-Z]{3}"), "COUNTRY": _rx(rb"[A-Z]{2}"),
    "MULTIPLEVALUESTRING": _MULTI, "MULTIPLESTRINGVALUE": _MULTI, "MULTIPLECHARVALUE": _MULTI,
    "UTCTIMESTAMP": _rx(_DATE + b"-" + _TIME), "UTCTIMEONLY": _rx(_TIME),
    "UTCDATEONLY": _rx(_DATE), "UTCDATE": _rx(_DATE), "LOCALMKTDATE": _rx(_DATE),
    "DATE": _rx(_DATE), "TIME": _rx(_DATE + b"-" + _TIME), "LOCALMKTTIME": _rx(_TIME),
    "MONTHYEAR": _rx(rb"[0-9]{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]|w[1-5])?"),
    "TZTIMEONLY": _rx(_TIME + _TZ), "TZTIMESTAMP": _rx(_DATE + b"-" + _TIME + _TZ),
})

#: Types whose value is a space-separated list (enum values apply to each item).
MULTI_VALUE_TYPES = frozenset({"MULTIPLEVALUESTRING", "MULTIPLESTRINGVALUE", "MULTIPLECHARVALUE"})


# --------------------------------------------------------------------------------------------
# Structures

@dataclass(frozen=True, slots=True)
class FieldDef:
    """A field of ``<fields>``: tag number, name, FIX type and its enumeration (may be empty)."""

    number: int
    name: str
    type: str
    values: tuple[tuple[str, str], ...] = ()    # (enum, description), in file order

    @property
    def enums(self) -> frozenset[str]:
        return frozenset(v for v, _ in self.values)


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field's use in a message, group or header: its tag, name and whether it is required."""

    number: int
    name: str
    required: bool


@dataclass(frozen=True, slots=True)
class GroupDef:
    """A repeating group: counter tag (NUMINGROUP), delimiter (first field of every entry)."""

    number: int
    name: str
    required: bool
    delimiter: int
    members: tuple["Member", ...]

    @property
    def tags(self) -> tuple[int, ...]:
        """Tags that may appear directly in an entry (fields and nested group counters)."""
        return tuple(m.number for m in self.members)


Member = Union[FieldRef, GroupDef]


@dataclass(frozen=True, slots=True)
class MessageDef:
    """A message type with its body members (components expanded), category admin or app."""

    msg_type: str
    name: str
    category: str
    members: tuple[Member, ...]

    @property
    def tags(self) -> tuple[int, ...]:
        return tuple(m.number for m in self.members)


@dataclass(frozen=True, slots=True, eq=False)
class Dictionary:
    """A loaded data dictionary (read-only)."""

    source: str
    begin_string: str                     # e.g. "FIX.4.4"
    service_pack: int
    fields: Mapping[int, FieldDef]        # by tag number
    header: tuple[Member, ...]
    trailer: tuple[Member, ...]
    messages: Mapping[str, MessageDef]    # by MsgType

    def field(self, key: Union[int, str]) -> FieldDef:
        """A field by number or name (KeyError if undefined)."""
        if isinstance(key, int):
            return self.fields[key]
        for f in self.fields.values():
            if f.name == key:
                return f
        raise KeyError(key)

    @property
    def fix_msg_types(self) -> Mapping[str, str]:
        """Every MsgType of the FIX version (the MsgType field's enum): value -> description."""
        f = self.fields.get(35)
        return MappingProxyType(dict(f.values) if f else {})


# --------------------------------------------------------------------------------------------
# Loading

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def load_dictionary(path: str) -> Dictionary:
    """Load a QuickFIX XML data dictionary file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise DictionaryError(str(path), "/", f"cannot read file: {e.strerror or e}") from None
    return parse_dictionary(data, str(path))


def parse_dictionary(text: Union[str, bytes], source: str = "<memory>") -> Dictionary:
    """Parse a QuickFIX XML data dictionary held in memory."""
    return _Loader(source).load(text)


def _req(elem: ET.Element, where: str, source: str) -> bool:
    v = elem.get("required", "N")
    if v in ("Y", "y"):
        return True
    if v in ("N", "n"):
        return False
    raise DictionaryError(source, where, f"required must be 'Y' or 'N', got {v!r}")


class _Loader:
    def __init__(self, source: str) -> None:
        self.src = source
        self.fields: dict[int, FieldDef] = {}
        self.by_name: dict[str, FieldDef] = {}
        self.components: dict[str, ET.Element] = {}

    def err(self, where: str, problem: str) -> DictionaryError:
        return DictionaryError(self.src, where, problem)

    def load(self, text: Union[str, bytes]) -> Dictionary:
        try:
            root = ET.fromstring(text)
        except ET.ParseError as e:
            line, col = e.position
            raise self.err(f"line {line}, column {col + 1}", f"invalid XML: {e}") from None
        if root.tag != "fix":
            raise self.err(f"/{root.tag}", "the root element must be <fix>")
        major, minor, sp = (root.get(a) for a in ("major", "minor", "servicepack"))
        for name, v in (("major", major), ("minor", minor), ("servicepack", sp or "0")):
            if v is None or not v.isdigit():
                raise self.err("/fix", f"attribute {name} must be a number, got {v!r}")
        kind = root.get("type", "FIX")
        if kind not in ("FIX", "FIXT"):
            raise self.err("/fix", f"attribute type must be FIX or FIXT, got {kind!r}")
        sections: dict[str, ET.Element] = {}
        for child in root:
            if child.tag not in ("header", "trailer", "messages", "components", "fields"):
                raise self.err(f"/fix/{child.tag}", "unknown element")
            if child.tag in sections:
                raise self.err(f"/fix/{child.tag}", "section appears more than once")
            sections[child.tag] = child
        for name in ("header", "trailer", "messages", "fields"):
            if name not in sections:
                raise self.err(f"/fix/{name}", "required section is missing")
        self._load_fields(sections["fields"])
        if "components" in sections:
            self._index_components(sections["components"])
        header = self._members(sections["header"], "/fix/header", True, ())
        trailer = self._members(sections["trailer"], "/fix/trailer", True, ())
        # empty header and trailer: a FIX 5 application dictionary (the envelope is FIXT's)
        if header and tuple(m.number for m in header[:3]) != (8, 9, 35):
            raise self.err("/fix/header", "must begin with BeginString, BodyLength, MsgType")
        if trailer and 10 not in {m.number for m in trailer}:
            raise self.err("/fix/trailer", "must contain CheckSum")
        envelope = {m.number: "header" for m in header} | {m.number: "trailer" for m in trailer}
        messages = self._load_messages(sections["messages"], envelope)
        return Dictionary(
            source=self.src, begin_string=f"{kind}.{major}.{minor}", service_pack=int(sp or 0),
            fields=MappingProxyType(dict(self.fields)), header=header, trailer=trailer,
            messages=MappingProxyType(messages))

    def _load_fields(self, section: ET.Element) -> None:
        for i, el in enumerate(section, 1):
            where = f"/fix/fields/{el.tag}[{i}]"
            if el.tag != "field":
                raise self.err(where, "unknown element (expected <field>)")
            num, name, ftype = el.get("number"), el.get("name"), el.get("type")
            if name is None or not _NAME.match(name):
                raise self.err(where, f"name must be an identifier, got {name!r}")
            where = f"/fix/fields/field[@name='{name}']"
            if num is None or not num.isdigit() or int(num) <= 0:
                raise self.err(where, f"number must be a positive integer, got {num!r}")
            if ftype not in FORMAT_CHECKS:
                raise self.err(where, f"unknown type {ftype!r}")
            n = int(num)
            if n in self.fields:
                raise self.err(where, f"number {n} is already used by {self.fields[n].name}")
            if name in self.by_name:
                raise self.err(where, "name is defined more than once")
            values: list[tuple[str, str]] = []
            check = FORMAT_CHECKS[ftype]
            for v in el:
                enum = v.get("enum")
                vwhere = f"{where}/value[@enum='{enum}']"
                if v.tag != "value":
                    raise self.err(f"{where}/{v.tag}", "unknown element (expected <value>)")
                if not enum:
                    raise self.err(f"{where}/value", "enum attribute is missing or empty")
                if any(enum == e for e, _ in values):
                    raise self.err(vwhere, "enum value is listed more than once")
                items = enum.split(" ") if ftype in MULTI_VALUE_TYPES else (enum,)
                raw = [x.encode("latin-1", "replace") for x in items]
                if check is not None and not all(check(x) for x in raw):
                    raise self.err(vwhere, f"value is not a valid {ftype}")
                values.append((enum, v.get("description", "")))
            fd = FieldDef(n, name, ftype, tuple(values))
            self.fields[n] = self.by_name[name] = fd
        if not self.fields:
            raise self.err("/fix/fields", "no fields defined")

    def _index_components(self, section: ET.Element) -> None:
        for i, el in enumerate(section, 1):
            name = el.get("name")
            if el.tag != "component":
                raise self.err(f"/fix/components/{el.tag}[{i}]",
                               "unknown element (expected <component>)")
            if not name:
                raise self.err(f"/fix/components/component[{i}]", "name attribute is missing")
            if name in self.components:
                raise self.err(f"/fix/components/component[@name='{name}']",
                               "defined more than once")
            self.components[name] = el

    def _load_messages(self, section: ET.Element,
                       envelope: dict[int, str]) -> dict[str, MessageDef]:
        messages: dict[str, MessageDef] = {}
        names: set[str] = set()
        for i, el in enumerate(section, 1):
            if el.tag != "message":
                raise self.err(f"/fix/messages/{el.tag}[{i}]",
                               "unknown element (expected <message>)")
            mt, name, cat = el.get("msgtype"), el.get("name"), el.get("msgcat")
            where = (f"/fix/messages/message[@msgtype='{mt}']" if mt
                     else f"/fix/messages/message[{i}]")
            if not mt or not re.fullmatch(r"[0-9A-Za-z]{1,3}", mt):
                raise self.err(where, f"msgtype must be 1 to 3 letters or digits, got {mt!r}")
            if name is None or not _NAME.match(name):
                raise self.err(where, f"name must be an identifier, got {name!r}")
            if cat not in ("admin", "app"):
                raise self.err(where, f"msgcat must be 'admin' or 'app', got {cat!r}")
            if mt in messages or name in names:
                raise self.err(where, "message is defined more than once")
            members = self._members(el, where, True, ())
            for m in members:
                if m.number in envelope:
                    raise self.err(f"{where}/field[@name='{m.name}']",
                                   f"tag {m.number} is already a {envelope[m.number]} field")
            messages[mt] = MessageDef(mt, name, cat, members)
            names.add(name)
        if not messages:
            raise self.err("/fix/messages", "no messages defined")
        return messages

    def _members(self, parent: ET.Element, where: str, required_ctx: bool,
                 stack: tuple[str, ...]) -> tuple[Member, ...]:
        """Members of a message, group, component or header (components expanded)."""
        out: list[Member] = []
        for el in parent:
            name = el.get("name")
            here = f"{where}/{el.tag}[@name='{name}']"
            if el.tag not in ("field", "group", "component"):
                raise self.err(f"{where}/{el.tag}", "unknown element")
            if not name:
                raise self.err(f"{where}/{el.tag}", "name attribute is missing")
            required = _req(el, here, self.src) and required_ctx
            if el.tag == "component":
                comp = self.components.get(name)
                if comp is None:
                    raise self.err(here, f"component '{name}' is not defined in /fix/components")
                if name in stack:
                    raise self.err(here, f"component '{name}' includes itself")
                out.extend(self._members(comp, f"/fix/components/component[@name='{name}']",
                                         required, stack + (name,)))
                continue
            fd = self.by_name.get(name)
            if fd is None:
                raise self.err(here, f"field '{name}' is not defined in /fix/fields")
            if el.tag == "field":
                if len(el):
                    raise self.err(here, "a field reference has no children")
                out.append(FieldRef(fd.number, name, required))
                continue
            if fd.type not in ("NUMINGROUP", "INT"):    # INT: counters before FIX 4.3
                raise self.err(here, f"group counter '{name}' must be of type NUMINGROUP, "
                                     f"not {fd.type}")
            members = self._members(el, here, True, stack)
            if not members:
                raise self.err(here, "group has no members")
            if not isinstance(members[0], FieldRef):
                raise self.err(here, "the first member of a group (its delimiter) must be a field")
            out.append(GroupDef(fd.number, name, required, members[0].number, members))
        seen: dict[int, str] = {}
        for m in out:
            if m.number in seen:
                raise self.err(where, f"tag {m.number} ({m.name}) appears more than once "
                                      f"at this level")
            seen[m.number] = m.name
        return tuple(out)
