"""Input checking shared by every API style: typed fields, identifiers, phone numbers.

Each handler declares a small table of field name → `Field`; `parse_fields` returns
only those fields, typed and bounded, and raises `InvalidRequest` for anything else.
Objects and arrays are refused wherever a scalar is expected, which is what stops
MongoDB operator injection (`{"$ne": null}`) before it reaches a query.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers

from .errors import InvalidRequest

USERNAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{1,63}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Field:
    kind: type = str
    required: bool = False
    max_len: int = 256
    lo: int | None = None
    hi: int | None = None
    allow_empty: bool = False
    digits_as_int_ok: bool = False  # a one-time code may arrive as 123456 or "123456"


def parse_fields(body: Mapping[str, Any], spec: Mapping[str, Field]) -> dict[str, Any]:
    """Check `body` against `spec`; unlisted fields are ignored (never stored)."""
    out: dict[str, Any] = {}
    for name, f in spec.items():
        value = body.get(name)
        if value is None or (value == "" and f.kind is str and not f.allow_empty):
            if f.required:
                raise InvalidRequest(f"'{name}' is required", field=name)
            continue
        if f.kind is int:
            # bool is an int in Python; a JSON true is not a number.
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}", value.strip()):
                    value = int(value)
                else:
                    raise InvalidRequest(f"'{name}' must be an integer", field=name)
            if (f.lo is not None and value < f.lo) or (f.hi is not None and value > f.hi):
                raise InvalidRequest(f"'{name}' must be between {f.lo} and {f.hi}", field=name)
        elif f.kind is str:
            if f.digits_as_int_ok and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                value = str(value)
            if not isinstance(value, str):
                raise InvalidRequest(f"'{name}' must be a string", field=name)
            if len(value) > f.max_len:
                raise InvalidRequest(f"'{name}' must be at most {f.max_len} characters", field=name)
            if "\x00" in value:
                raise InvalidRequest(f"'{name}' must not contain NUL characters", field=name)
        elif f.kind is bool:
            if not isinstance(value, bool):
                raise InvalidRequest(f"'{name}' must be true or false", field=name)
        elif f.kind is dict:
            if not isinstance(value, dict):
                raise InvalidRequest(f"'{name}' must be an object", field=name)
        out[name] = value
    return out


def normalize_username(raw: str) -> str:
    """Usernames are ASCII, start with a letter and contain no '@', so a login name is
    never ambiguous between a username, an e-mail address and a phone number."""
    name = raw.strip()
    if not USERNAME_RE.match(name):
        raise InvalidRequest(
            "username must be 2-64 characters: letters, digits, '.', '_' or '-', starting with a letter",
            field="username",
        )
    return name


def username_key(name: str) -> str:
    return name.lower()


def search_key(text: str) -> str:
    """The form every searched name is stored and asked in: NFKC (full-width ＡＬＩＣＥ is
    ALICE, ligatures and compatibility forms fold) then casefold (any script's case), so
    a search is case- and width-insensitive. For an ASCII username it is `username_key`."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


def normalize_email(raw: str) -> str:
    email = raw.strip()
    if len(email) > 254 or not EMAIL_RE.match(email):
        raise InvalidRequest("email must be an address like name@example.com", field="email")
    return email


def email_key(email: str) -> str:
    return email.lower()


def normalize_phone(raw: str, region: str, field: str = "phone") -> str:
    """E.164 form of a phone number, so `888-888-8888` and `+18888888888` are one number."""
    try:
        number = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise InvalidRequest(f"'{field}' is not a valid phone number (use E.164, e.g. +14155552671)", field=field)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_premium_or_unsendable(e164: str) -> bool:
    """Numbers we never send codes to: premium-rate and shared-cost lines (SMS pumping)."""
    number = phonenumbers.parse(e164, None)
    return phonenumbers.number_type(number) in (
        phonenumbers.PhoneNumberType.PREMIUM_RATE,
        phonenumbers.PhoneNumberType.SHARED_COST,
        phonenumbers.PhoneNumberType.UAN,
        phonenumbers.PhoneNumberType.VOICEMAIL,
        phonenumbers.PhoneNumberType.PAGER,
    )


def region_of(e164: str) -> str:
    """The ISO country code of a number ("US", "GB"), "" when unknown."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or ""


def number_block(e164: str) -> str:
    """The block of 100 consecutive numbers this one belongs to (+1415555 01xx)."""
    return e164[:-2]


def classify_login(identifier: str, region: str) -> tuple[str, str] | None:
    """Which account field a login name refers to, with its lookup key; None when it fits none."""
    ident = identifier.strip()
    if "@" in ident:
        return ("email_key", email_key(ident)) if EMAIL_RE.match(ident) else None
    if USERNAME_RE.match(ident):
        return ("username_key", username_key(ident))
    try:
        return ("phone", normalize_phone(ident, region))
    except InvalidRequest:
        return None


def normalize_password_text(password: str) -> str:
    """NFKC so the same passphrase typed on two keyboards is one password (NIST 800-63B)."""
    return unicodedata.normalize("NFKC", password)


NOTE_MAX = 200  # an operator's reason for an action, kept in its audit event


def operator_note(note: object) -> str | None:
    """An operator's free-text reason for an action, as its audit event keeps it: text of
    at most NOTE_MAX characters on one line (whitespace runs, line breaks included,
    become one space); other control characters are a 400; none when empty."""
    if note is None:
        return None
    if not isinstance(note, str):
        raise InvalidRequest("'reason' must be text", field="reason")
    note = " ".join(note.split())
    if len(note) > NOTE_MAX:
        raise InvalidRequest(f"'reason' must be at most {NOTE_MAX} characters", field="reason")
    if any(ord(c) < 32 or ord(c) == 127 for c in note):
        raise InvalidRequest("'reason' must be one line of text", field="reason")
    return note or None
