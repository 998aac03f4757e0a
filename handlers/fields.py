"""The request fields every style asks for, declared once.

A value has one shape wherever it is asked for (a password is at most 4096 characters
in every document), so it is declared here, not per handler; /openapi.json is derived
from these same objects (`spec.fields_schema`). A constant carries the requiredness
most routes want; `optional(F)` / `required(F)` give the other. A field whose shape
differs between documents (document 001's sign-up `token`, DRF's `username` filter)
stays beside its handler.
"""

from __future__ import annotations

from dataclasses import replace

from models.validation import NOTE_MAX, Field


def optional(field: Field) -> Field:
    return replace(field, required=False)


def required(field: Field) -> Field:
    return replace(field, required=True)


# ---- credentials ----------------------------------------------------------------------

# Whatever names an account at login: a username, an e-mail address or a phone number.
LOGIN_NAME = Field(str, required=True, max_len=320)
PASSWORD = Field(str, required=True, max_len=4096)
NEW_PASSWORD = PASSWORD

# ---- an account's details ---------------------------------------------------------------

USERNAME = Field(str, max_len=64)  # a new account's username (see normalize_username)
EMAIL = Field(str, max_len=254)
PHONE = Field(str, max_len=32)
NICKNAME = Field(str, max_len=100, allow_empty=True)

# ---- codes and tokens -------------------------------------------------------------------

CODE = Field(str, required=True, max_len=16, digits_as_int_ok=True)  # 123456 or "123456"
TOKEN = Field(str, required=True, max_len=4096)  # an opaque token, a JWT or a refresh token

# ---- lists (admin) ----------------------------------------------------------------------

ACCOUNT_REF = Field(str, max_len=320)  # an account by id, uid, username, e-mail or phone
SEARCH = Field(str, max_len=320)  # a search text (models/search.py: what it is tried as)
ACCOUNT_SORT = Field(str, max_len=16)  # created | last_active | sessions
SORT_ORDER = Field(str, max_len=8)  # asc | desc
LIST_ORDER = Field(str, max_len=8)  # newest (the default) | oldest: a list's end first
START = Field(int, lo=1, hi=1_000_000)  # the position of a cursor page's first row
PAGE = Field(int, lo=1, hi=1_000_000)
LIMIT = Field(int, lo=1, hi=200)
CURSOR = Field(str, max_len=200)
SESSION_KIND = Field(str, max_len=16)
ACTIVE = Field(str, max_len=5)  # "true" / "1" (API) or "1" (console)
EVENT_TYPE = Field(str, max_len=32)
TIME = Field(str, max_len=40)  # ISO 8601
NOTE = Field(str, max_len=4 * NOTE_MAX)  # an administrator's reason (operator_note checks it on one line)
OUTCOME = Field(str, max_len=8)  # an event's: ok / failed
IP_PREFIX = Field(str, max_len=45)  # an IP address or the start of one
TIME_ZONE = Field(str, max_len=64)  # an IANA zone name, as the browser reports it
