"""Exceptions of the FAST codec.

Contract: every failure of the codec surfaces as one of two exception types.

* ``TemplateError`` -- a template file is unusable (a FAST *static* error, ERR S1..S5, or
  something this implementation does not support).  Its message names the file, the
  template and the field; the same parts are available as attributes.
* ``FastError`` -- encoding or decoding failed (a FAST *dynamic* or *reportable* error,
  truncated or malformed data, a value that does not fit its field).  ``code`` carries the
  FAST error code when one applies (``"D2"``, ``"R6"``, ...), else ``None``.
"""

from __future__ import annotations

__all__ = ["FastError", "TemplateError"]


class FastError(ValueError):
    """Encoding or decoding failed; never an IndexError or a bare TypeError."""

    def __init__(self, message: str, code: str | None = None) -> None:
        self.code = code
        super().__init__(f"[ERR {code}] {message}" if code else message)


class TemplateError(ValueError):
    """A template definition is invalid; names the file, template and field."""

    def __init__(
        self,
        message: str,
        file: str | None = None,
        template: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.template = template
        self.field = field
        self.reason = message
        where = []
        if file:
            where.append(str(file))
        if template:
            where.append(f"template {template!r}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(": ".join(where + [message]) if where else message)
