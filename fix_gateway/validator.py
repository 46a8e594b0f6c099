"""Validation of received FIX messages against a data dictionary, with QuickFIX's reject codes.

Contract:
- ``Validator(dictionary, rules=DEFAULT_RULES)``; ``validate(msg) -> Reject | None``, also
  ``validator(msg)`` (the session layer's validator callable); ``validate_full`` gives the
  same answer without the fast path. ``msg`` is a ``fix_gateway.codec.FixMessage`` or
  anything with ``fields`` (every ``(tag, value_bytes)`` pair in wire order, header 8, 9,
  35 ... to trailer 10), ``msg_type: str`` and ``get(tag) -> bytes | None``. ``validate``
  never raises for any message content.
- ``None``: the message may be processed. Otherwise a ``fix_gateway.errors.Reject`` describing
  the first problem, looked for in this order (QuickFIX's: structure, MsgType, required fields,
  then each field in wire order; business rules last):
    1. BeginString(8), BodyLength(9), MsgType(35) first and CheckSum(10) last, else
       14 (tag specified out of required order), or 1 (required tag missing) when absent.
    2. MsgType: without value 4; a FIX MsgType the dictionary does not list -> business
       reject 3 (unsupported message type); anything else 11 (invalid MsgType).
    3. Structure, in wire order: a header field after a body field or a body field after the
       trailer 14; a repeating group entry that does not begin with the group's delimiter 15.
    4. Required tags missing 1: message level (header, body, trailer), then each group entry.
    5. Each field in wire order: tag appears more than once in the message or in one group
       entry 13, without value 4, tag not in the dictionary 0, incorrect data format for its
       type 6, value not in its enumeration 5, tag not defined for this message type (or a
       group's field outside its group) 2, and for a NumInGroup, a count different from the
       number of entries 16.
    6. Business rules (``ConditionalRule``): a field required by another field's value is
       missing -> business reject 5 (conditionally required field missing).
- ``Reject.reason`` is a SessionRejectReason (373) when ``business`` is False (the session
  answers with Reject 35=3) and a BusinessRejectReason (380) when True (BusinessMessageReject
  35=j; ``ref_id`` then carries the message's own ID, e.g. its ClOrdID, when it has one).
  ``ref_tag`` is the tag at fault (RefTagID 371); ``text`` names the tag and the problem.
- Differences from QuickFIX: fields are examined in wire order (QuickFIX: tag-number order),
  so with several problems in one phase the one reported may differ; fields inside repeating
  groups are checked like any other (QuickFIX 1.16 checks only their structure and count).
- Header and trailer fields are allowed in every message. A message without repeating groups
  takes a precomputed fast path; anything unusual falls back to the full ordered check, which
  is the reference and alone builds every ``Reject``. The fast path only ever answers "valid":
  for a parsed ``FixMessage`` it runs compiled (``fix_gateway._fixfast.MsgTable``, tables made
  here from the dictionary), for anything else in Python (``_fast_ok``); both accept exactly
  the same messages (the tests compare them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Protocol, Sequence

from fix_gateway import codec as _codec
from fix_gateway.dictionary import (
    FORMAT_CHECKS, MULTI_VALUE_TYPES, Dictionary, FieldDef, FieldRef, GroupDef, Member,
)
from fix_gateway.errors import BusinessRejectReason as BR, Reject, SessionRejectReason as SR

_fast = _codec._fast
#: The compiled message type: only its instances take the compiled fast path.
_CMessage = _fast.FixMessage if _fast is not None else None

__all__ = ["Validator", "ConditionalRule", "DEFAULT_RULES", "Reject"]


@dataclass(frozen=True, slots=True)
class ConditionalRule:
    """In ``msg_type`` messages: when ``if_tag`` has one of ``if_values``, ``then_tag`` is
    required (a missing one is a business reject, BusinessRejectReason 5)."""

    msg_type: str
    if_tag: int
    if_values: frozenset[str]
    then_tag: int


def _rule(msg_type: str, if_tag: int, values: str, then_tag: int) -> ConditionalRule:
    return ConditionalRule(msg_type, if_tag, frozenset(values.split()), then_tag)


#: The exchange's conditionally required fields (spec/rules-of-engagement.md).
DEFAULT_RULES: tuple[ConditionalRule, ...] = (
    _rule("D", 40, "2", 44),     # limit order: Price
    _rule("G", 40, "2", 44),
    _rule("q", 530, "1", 55),    # mass cancel for a security: Symbol
    _rule("AF", 585, "1", 55),   # mass status for a security: Symbol
    _rule("x", 559, "0", 55),    # security list for one symbol: Symbol
    _rule("V", 263, "1", 265),   # snapshot + updates: MDUpdateType
)

#: The field carrying a message's own ID: BusinessRejectRefID (379) of a business reject.
_ID_TAGS = {"D": 11, "F": 11, "G": 11, "H": 11, "q": 11, "AF": 584, "V": 262, "x": 320}


class FixMessageLike(Protocol):
    fields: Sequence[tuple[int, bytes]]
    msg_type: str

    def get(self, tag: int) -> Optional[bytes]: ...


_HEADER, _BODY, _TRAILER = 0, 1, 2
_SECTION = ("header", "body", "trailer")


class _Scope:
    """One level of a message (the message itself or a group entry): allowed and required tags."""

    __slots__ = ("name", "counter", "delim", "allowed", "required", "groups")

    def __init__(self, name: str, members: tuple[Member, ...], counter: int = 0) -> None:
        self.name = f"{name}({counter})" if counter else name
        self.counter = counter
        self.delim = members[0].number if counter else 0
        self.allowed = frozenset(m.number for m in members)
        self.required = tuple(m.number for m in members if m.required)
        self.groups = {m.number: _Scope(m.name, m.members, m.number)
                       for m in members if isinstance(m, GroupDef)}


#: FIX type -> the compiled check equal to its FORMAT_CHECKS predicate (others: K_CALL, which
#: calls the predicate itself).
_C_KINDS = {} if _fast is None else {
    "INT": _fast.K_INT, "LENGTH": _fast.K_DIGITS, "SEQNUM": _fast.K_DIGITS,
    "NUMINGROUP": _fast.K_DIGITS, "TAGNUM": _fast.K_DIGITS,
    "FLOAT": _fast.K_DECIMAL, "QTY": _fast.K_DECIMAL, "PRICE": _fast.K_DECIMAL,
    "PRICEOFFSET": _fast.K_DECIMAL, "AMT": _fast.K_DECIMAL, "PERCENTAGE": _fast.K_DECIMAL,
    "CHAR": _fast.K_CHAR, "BOOLEAN": _fast.K_BOOLEAN, "UTCTIMESTAMP": _fast.K_UTCTIMESTAMP,
}


def _c_check(f: FieldDef) -> tuple[int, object]:
    """(kind, payload) of the compiled check of ``f``, the same predicate as ``_fast_check``."""
    assert _fast is not None
    if f.values:
        enums = tuple(dict.fromkeys(v.encode("latin-1") for v, _ in f.values))
        payload = enums if len(enums) <= 8 else frozenset(enums)
        return (_fast.K_MULTIENUM if f.type in MULTI_VALUE_TYPES else _fast.K_ENUM), payload
    fmt = FORMAT_CHECKS[f.type]
    if fmt is None:
        return _fast.K_ANY, None
    kind = _C_KINDS.get(f.type)
    return (kind, None) if kind is not None else (_fast.K_CALL, fmt)


class _Msg:
    """Precomputed tables of one message type."""

    __slots__ = ("msg_type", "name", "scope", "section", "required", "flat", "rules",
                 "group_only", "id_tag", "ctable")

    def __init__(self, d: Dictionary, msg_type: str, name: str, body: tuple[Member, ...],
                 checks: dict, rules: tuple[ConditionalRule, ...],
                 cchecks: Optional[dict] = None) -> None:
        members = d.header + body + d.trailer
        self.msg_type, self.name = msg_type, name
        self.scope = _Scope(name, members)
        self.section = {m.number: _HEADER for m in d.header}
        self.section.update({m.number: _BODY for m in body})
        self.section.update({m.number: _TRAILER for m in d.trailer})
        self.required = frozenset(self.scope.required)
        # fast path: tag -> (section, check); group counters are left out (full path)
        self.flat = {m.number: (self.section[m.number], checks[m.number])
                     for m in members if isinstance(m, FieldRef)}
        self.rules = tuple((r.if_tag, frozenset(v.encode() for v in r.if_values), r.then_tag)
                           for r in rules)
        self.id_tag = _ID_TAGS.get(msg_type, 0)
        # the same fast path, compiled: entries (tag, section, kind, payload)
        self.ctable = None if cchecks is None else _fast.MsgTable(
            [(t, sec, *cchecks[t]) for t, (sec, _chk) in self.flat.items()],
            tuple(self.required),
            [(i, tuple(v), t) for i, v, t in self.rules])
        self.group_only: dict[int, str] = {}    # tag found only inside a group -> group name
        todo = list(self.scope.groups.values())
        while todo:
            g = todo.pop()
            for t in g.allowed - self.scope.allowed:
                self.group_only.setdefault(t, g.name)
            todo.extend(g.groups.values())


def _show(value: bytes) -> str:
    s = value.decode("latin-1")
    return repr(s if len(s) <= 40 else s[:40] + "...")


class Validator:
    """Validates received messages against a ``Dictionary`` (see the module docstring)."""

    def __init__(self, dictionary: Dictionary,
                 rules: Iterable[ConditionalRule] = DEFAULT_RULES) -> None:
        if not dictionary.header:
            raise ValueError(f"{dictionary.source}: the dictionary has no session header")
        self.dictionary = dictionary
        self._fields = dictionary.fields
        self._fix_types = dictionary.fix_msg_types
        checks = {n: self._fast_check(f) for n, f in dictionary.fields.items()}
        cchecks = (None if _fast is None
                   else {n: _c_check(f) for n, f in dictionary.fields.items()})
        by_type: dict[str, list[ConditionalRule]] = {}
        for r in rules:
            m = dictionary.messages.get(r.msg_type)
            if m is None:
                continue                      # a message this dictionary does not have
            for t in (r.if_tag, r.then_tag):
                if t not in m.tags:
                    raise ValueError(f"{r}: tag {t} is not a field of {m.name}")
            by_type.setdefault(r.msg_type, []).append(r)
        self._msgs = {mt: _Msg(dictionary, mt, m.name, m.members, checks,
                               tuple(by_type.get(mt, ())), cchecks)
                      for mt, m in dictionary.messages.items()}

    @staticmethod
    def _fast_check(f: FieldDef) -> Optional[Callable[[bytes], object]]:
        """One predicate for format and enumeration together (None: any non-empty value)."""
        fmt = FORMAT_CHECKS[f.type]
        if not f.values:
            return fmt
        enums = frozenset(v.encode("latin-1") for v, _ in f.values)
        if f.type in MULTI_VALUE_TYPES:
            return lambda b: bool(fmt(b)) and all(x in enums for x in b.split(b" "))
        return enums.__contains__

    def validate(self, msg: FixMessageLike) -> Optional[Reject]:
        """The first problem of ``msg`` as a ``Reject``, or None when it is valid."""
        spec = self._msgs.get(msg.msg_type)
        if spec is not None:
            ctable = spec.ctable
            if ctable is not None and type(msg) is _CMessage:
                if ctable.check(msg):
                    return None
            elif self._fast_ok(spec, msg):
                return None
        try:
            return self._full(msg, spec)
        except Exception as e:    # a bug, never the message's fault: still answer
            return Reject(reason=SR.OTHER, ref_tag=35,
                          text=f"message could not be validated ({type(e).__name__})")

    __call__ = validate        # the session layer's ``Validator`` is a plain callable

    @staticmethod
    def _fast_ok(spec: _Msg, msg: FixMessageLike) -> bool:
        """The fast path in Python: True when ``msg`` certainly passes every check (no
        repeating group, every field known and well formed, in section order, no repeated
        tag, required fields present, no conditional rule triggered)."""
        fields = msg.fields
        if not (len(fields) > 3 and fields[0][0] == 8 and fields[1][0] == 9
                and fields[2][0] == 35 and fields[-1][0] == 10):
            return False
        flat_get = spec.flat.get
        seen: set[int] = set()
        add = seen.add
        prev = _HEADER
        for tag, val in fields:
            ent = flat_get(tag)
            if ent is None or not val:
                return False
            sec, chk = ent
            if sec < prev or (chk is not None and not chk(val)):
                return False
            prev = sec
            add(tag)
        if len(seen) != len(fields) or not spec.required <= seen:
            return False
        for if_tag, values, then_tag in spec.rules:
            if then_tag not in seen and msg.get(if_tag) in values:
                return False
        return True

    def validate_full(self, msg: FixMessageLike) -> Optional[Reject]:
        """Same answer as ``validate`` without the fast path: the reference (slower)."""
        return self._full(msg, self._msgs.get(msg.msg_type))

    # ----------------------------------------------------------------------------------------
    # The full check, in order

    def _name(self, tag: int) -> str:
        f = self._fields.get(tag)
        return f"{f.name}({tag})" if f else f"tag {tag}"

    def _full(self, msg: FixMessageLike, spec: Optional[_Msg]) -> Optional[Reject]:
        fields = list(msg.fields)
        tags = [t for t, _ in fields]
        # 1. envelope
        for i, t in enumerate((8, 9, 35)):
            if i >= len(tags) or tags[i] != t:
                if t in tags:
                    return Reject(reason=SR.TAG_OUT_OF_ORDER, ref_tag=t,
                                  text=f"Tag specified out of required order: {self._name(t)} "
                                       f"must be field {i + 1} of the message")
                return Reject(reason=SR.REQUIRED_TAG_MISSING, ref_tag=t,
                              text=f"Required tag missing: {self._name(t)}")
        if tags[-1] != 10:
            if 10 in tags:
                return Reject(reason=SR.TAG_OUT_OF_ORDER, ref_tag=10,
                              text="Tag specified out of required order: CheckSum(10) "
                                   "must be the last field")
            return Reject(reason=SR.REQUIRED_TAG_MISSING, ref_tag=10,
                          text="Required tag missing: CheckSum(10)")
        # 2. MsgType
        mt = msg.msg_type
        if spec is None:
            if not mt:
                return Reject(reason=SR.TAG_SPECIFIED_WITHOUT_VALUE, ref_tag=35,
                              text="Tag specified without a value: MsgType(35)")
            if mt in self._fix_types:
                return Reject(reason=BR.UNSUPPORTED_MESSAGE_TYPE, ref_tag=35, business=True,
                              text=f"Unsupported message type: MsgType(35)={mt!r} "
                                   f"({self._fix_types[mt]}) is not supported")
            return Reject(reason=SR.INVALID_MSG_TYPE, ref_tag=35,
                          text=f"Invalid MsgType: MsgType(35)={mt!r} is not a "
                               f"{self.dictionary.begin_string} message type")
        # 3. structure. Occurrences: (tag, value, scope, entry key (0: message level),
        # number of entries found after it when it is a NumInGroup, else -1)
        top = spec.scope
        occ: list[tuple[int, bytes, _Scope, int, int]] = []
        entries: list[tuple[_Scope, int]] = []
        prev = _HEADER
        i = 0
        while i < len(fields):
            tag, val = fields[i]
            sec = spec.section.get(tag, _BODY)
            if sec < prev:
                return Reject(reason=SR.TAG_OUT_OF_ORDER, ref_tag=tag,
                              text=f"Tag specified out of required order: {_SECTION[sec]} "
                                   f"field {self._name(tag)} after {_SECTION[prev]} fields")
            prev = sec
            i += 1
            g = top.groups.get(tag)
            if g is None:
                occ.append((tag, val, top, 0, -1))
                continue
            at = len(occ)
            occ.append((tag, val, top, 0, 0))
            i, found, r = self._group(fields, i, g, occ, entries)
            if r is not None:
                return r
            occ[at] = (tag, val, top, 0, found)
        # 4. required tags
        present = {t for t, _, _, k, _ in occ if k == 0}
        for t in top.required:
            if t not in present:
                return Reject(reason=SR.REQUIRED_TAG_MISSING, ref_tag=t,
                              text=f"Required tag missing: {self._name(t)} "
                                   f"in {spec.name} (35={mt})")
        if entries:
            in_entry: dict[int, set[int]] = {}
            for t, _, _, k, _ in occ:
                if k:
                    in_entry.setdefault(k, set()).add(t)
            for g, k in entries:
                for t in g.required:
                    if t not in in_entry[k]:
                        return Reject(reason=SR.REQUIRED_TAG_MISSING, ref_tag=t,
                                      text=f"Required tag missing: {self._name(t)} in an entry "
                                           f"of repeating group {g.name}")
        # 5. each field, in wire order
        seen: dict[int, set[int]] = {}
        for tag, val, scope, key, found in occ:
            s = seen.setdefault(key, set())
            if tag in s:
                where = f" in an entry of repeating group {scope.name}" if key else ""
                return Reject(reason=SR.TAG_APPEARS_MORE_THAN_ONCE, ref_tag=tag,
                              text=f"Tag appears more than once: {self._name(tag)}{where}")
            s.add(tag)
            if not val:
                return Reject(reason=SR.TAG_SPECIFIED_WITHOUT_VALUE, ref_tag=tag,
                              text=f"Tag specified without a value: {self._name(tag)}")
            f = self._fields.get(tag)
            if f is None:
                return Reject(reason=SR.INVALID_TAG_NUMBER, ref_tag=tag,
                              text=f"Invalid tag number: {tag} is not defined "
                                   f"in the {self.dictionary.begin_string} dictionary")
            r = self._check_value(f, val)
            if r is not None:
                return r
            if tag not in scope.allowed:
                hint = (f" (it belongs to repeating group {spec.group_only[tag]})"
                        if tag in spec.group_only else "")
                return Reject(reason=SR.TAG_NOT_DEFINED_FOR_MSG_TYPE, ref_tag=tag,
                              text=f"Tag not defined for this message type: {self._name(tag)} "
                                   f"is not a field of {spec.name} (35={mt}){hint}")
            if found >= 0 and found != int(val):
                return Reject(reason=SR.INCORRECT_NUM_IN_GROUP, ref_tag=tag,
                              text=f"Incorrect NumInGroup count for repeating group: "
                                   f"{self._name(tag)}={int(val)} but {found} entries found")
        # 6. business rules
        for if_tag, values, then_tag in spec.rules:
            v = msg.get(if_tag)
            if v in values and then_tag not in present:
                ref = msg.get(spec.id_tag) if spec.id_tag else None
                return Reject(reason=BR.CONDITIONALLY_REQUIRED_FIELD_MISSING, ref_tag=then_tag,
                              business=True, ref_id=ref.decode("latin-1") if ref else None,
                              text=f"Conditionally required field missing: "
                                   f"{self._name(then_tag)} is required when "
                                   f"{self._name(if_tag)}={v.decode('latin-1')}")
        return None

    def _group(self, fields: list, i: int, g: _Scope, occ: list,
               entries: list) -> tuple[int, int, Optional[Reject]]:
        """Consume the entries of group ``g`` from ``fields[i:]``: (next index, entries, reject)."""
        found = key = 0
        while i < len(fields):
            tag, val = fields[i]
            if tag == g.delim:
                found += 1
                key = len(occ) + 1            # unique per entry, never 0
                entries.append((g, key))
            elif tag not in g.allowed:
                break
            elif not found:
                return i, found, Reject(
                    reason=SR.REPEATING_GROUP_OUT_OF_ORDER, ref_tag=tag,
                    text=f"Repeating group fields out of order: an entry of {g.name} must "
                         f"begin with {self._name(g.delim)}, got {self._name(tag)}")
            i += 1
            sub = g.groups.get(tag)
            if sub is None:
                occ.append((tag, val, g, key, -1))
                continue
            at = len(occ)
            occ.append((tag, val, g, key, 0))
            i, n, r = self._group(fields, i, sub, occ, entries)
            if r is not None:
                return i, found, r
            occ[at] = (tag, val, g, key, n)
        return i, found, None

    def _check_value(self, f: FieldDef, val: bytes) -> Optional[Reject]:
        fmt = FORMAT_CHECKS[f.type]
        if fmt is not None and not fmt(val):
            return Reject(reason=SR.INCORRECT_DATA_FORMAT, ref_tag=f.number,
                          text=f"Incorrect data format for value: {f.name}({f.number})="
                               f"{_show(val)} is not a valid {f.type}")
        if f.values:
            enums = {v for v, _ in f.values}
            s = val.decode("latin-1")
            items = s.split(" ") if f.type in MULTI_VALUE_TYPES else (s,)
            if not all(x in enums for x in items):
                listed = ", ".join(f"{v} ({d})" if d else v for v, d in f.values[:12])
                more = ", ..." if len(f.values) > 12 else ""
                return Reject(reason=SR.VALUE_INCORRECT, ref_tag=f.number,
                              text=f"Value is incorrect (out of range) for this tag: "
                                   f"{f.name}({f.number})={_show(val)}; "
                                   f"expected {listed}{more}")
        return None
