"""Operator state (spec 6.3.1): dictionaries of previous values.

Contract:

* A previous value is in one of three states: *undefined* (the ``UNDEFINED`` sentinel),
  *empty* (``None``) or *assigned* (any other value: ``int``, ``str``, ``bytes`` or a
  decimal's ``(mantissa, exponent)`` pair).
* ``Layout`` assigns every dictionary entry a fixed slot index when templates are
  compiled, so compiled code reads and writes entries as ``D[slot]`` on one flat list.
  An entry is identified by its dictionary (``global``; ``template`` qualified by the
  current template's name; ``type`` qualified by the current application type, ``any``
  when no ``typeRef`` applies; any other name is a user-defined dictionary shared by
  name), its key, and its value kind.  Entries of different value kinds never share a
  slot (so ERR D4, type mismatch on a shared key, cannot arise).
* Slot 0 is the template identifier's copy-operator entry (global, internal key).
* ``State`` is one codec's set of dictionaries; ``reset()`` sets every entry back to
  undefined (the Moscow Exchange convention resets before each datagram).
"""

from __future__ import annotations

__all__ = ["UNDEFINED", "Layout", "State", "TID_SLOT"]


class _Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __reduce__(self):
        return "UNDEFINED"


UNDEFINED = _Undefined()
TID_SLOT = 0


class Layout:
    """Maps (dictionary scope, key, value kind) to slot indexes."""

    def __init__(self) -> None:
        self._slots: dict[tuple, int] = {(("global",), "\x00template-id", "tid"): TID_SLOT}

    @staticmethod
    def scope(dictionary: str, template: str, app_type: str | None) -> tuple:
        if dictionary == "global":
            return ("global",)
        if dictionary == "template":
            return ("template", template)
        if dictionary == "type":
            return ("type", app_type or "any")
        return ("user", dictionary)

    def slot(self, dictionary: str, key: str, kind: str, template: str,
             app_type: str | None) -> int:
        ident = (self.scope(dictionary, template, app_type), key, kind)
        idx = self._slots.get(ident)
        if idx is None:
            idx = self._slots[ident] = len(self._slots)
        return idx

    def __len__(self) -> int:
        return len(self._slots)

    def entries(self) -> dict[tuple, int]:
        return dict(self._slots)


class State:
    """The previous values of one encoder or decoder."""

    __slots__ = ("values", "_fresh")

    def __init__(self, size: int) -> None:
        self._fresh = [UNDEFINED] * size
        self.values = list(self._fresh)

    def reset(self) -> None:
        self.values[:] = self._fresh
