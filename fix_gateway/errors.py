"""Reject values shared by the session layer and message validators (no dependencies).

A validator (``Callable[[FixMessage], Reject | None]``) returns a ``Reject`` instead of raising:
the session turns it into a session-level Reject (35=3, SessionRejectReason 373 = ``reason``)
or, when ``business`` is true, a BusinessMessageReject (35=j, BusinessRejectReason 380 =
``reason``). Either way the rejected message consumes its inbound sequence number and is not
delivered to the application.
"""
from __future__ import annotations

from typing import Optional

import msgspec

__all__ = ["Reject", "SessionRejectReason", "BusinessRejectReason", "REJECT_TEXT"]


class SessionRejectReason:
    """SessionRejectReason (373) values, FIX 4.4."""

    INVALID_TAG_NUMBER = 0
    REQUIRED_TAG_MISSING = 1
    TAG_NOT_DEFINED_FOR_MSG_TYPE = 2
    UNDEFINED_TAG = 3
    TAG_SPECIFIED_WITHOUT_VALUE = 4
    VALUE_INCORRECT = 5
    INCORRECT_DATA_FORMAT = 6
    DECRYPTION_PROBLEM = 7
    SIGNATURE_PROBLEM = 8
    COMPID_PROBLEM = 9
    SENDING_TIME_ACCURACY = 10
    INVALID_MSG_TYPE = 11
    XML_VALIDATION_ERROR = 12
    TAG_APPEARS_MORE_THAN_ONCE = 13
    TAG_OUT_OF_ORDER = 14
    REPEATING_GROUP_OUT_OF_ORDER = 15
    INCORRECT_NUM_IN_GROUP = 16
    NON_DATA_VALUE_INCLUDES_SOH = 17
    OTHER = 99


class BusinessRejectReason:
    """BusinessRejectReason (380) values, FIX 4.4."""

    OTHER = 0
    UNKNOWN_ID = 1
    UNKNOWN_SECURITY = 2
    UNSUPPORTED_MESSAGE_TYPE = 3
    APPLICATION_NOT_AVAILABLE = 4
    CONDITIONALLY_REQUIRED_FIELD_MISSING = 5
    NOT_AUTHORIZED = 6
    DELIVERTO_FIRM_NOT_AVAILABLE = 7


#: Default Text (58) for each SessionRejectReason.
REJECT_TEXT: dict[int, str] = {
    0: "Invalid tag number",
    1: "Required tag missing",
    2: "Tag not defined for this message type",
    3: "Undefined Tag",
    4: "Tag specified without a value",
    5: "Value is incorrect (out of range) for this tag",
    6: "Incorrect data format for value",
    7: "Decryption problem",
    8: "Signature problem",
    9: "CompID problem",
    10: "SendingTime accuracy problem",
    11: "Invalid MsgType",
    12: "XML Validation error",
    13: "Tag appears more than once",
    14: "Tag specified out of required order",
    15: "Repeating group fields out of order",
    16: "Incorrect NumInGroup count for repeating group",
    17: "Non data value includes field delimiter (SOH character)",
    99: "Other",
}

_BUSINESS_TEXT: dict[int, str] = {
    0: "Other",
    1: "Unknown ID",
    2: "Unknown Security",
    3: "Unsupported Message Type",
    4: "Application not available",
    5: "Conditionally required field missing",
    6: "Not authorized",
    7: "DeliverTo firm not available at this time",
}


class Reject(msgspec.Struct, frozen=True):
    """Why an inbound message is refused.

    ``reason``: SessionRejectReason (373), or BusinessRejectReason (380) if ``business``.
    ``ref_tag``: the offending tag (RefTagID 371), if any.
    ``text``: free text (58); empty means the standard text for ``reason``.
    ``business``: answer with BusinessMessageReject (35=j) instead of Reject (35=3).
    ``ref_id``: BusinessRejectRefID (379), e.g. the ClOrdID, for business rejects.
    """

    reason: int
    ref_tag: Optional[int] = None
    text: str = ""
    business: bool = False
    ref_id: Optional[str] = None

    def describe(self) -> str:
        if self.text:
            return self.text
        table = _BUSINESS_TEXT if self.business else REJECT_TEXT
        return table.get(self.reason, "Other")
