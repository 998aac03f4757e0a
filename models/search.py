"""The one search rule of the console and the admin API: what a search text `q` is
tried as, on the accounts, sessions and events pages and the admin API's lists alike.

A text is trimmed, then NFKC-normalized and casefolded (`search_key`: ＡＬＩＣＥ, Alice
and alice are one text, in any script), and tried as every one of these it can be:

- a username prefix and a nickname prefix (`username_key`, `nickname_key`);
- an e-mail address prefix (`ali`, `alice@ex`: `email_key`), and, for `@example.org`,
  `example.org` or a prefix of one, the domain (`email_domain`);
- a phone number in any format (`(888) 888-8888`, `+1 888 888 8888`, `888.888.8888`):
  the exact E.164 number, and, with 4 digits or more, the numbers ending in its digits
  (`phone_rev`, the digits reversed, read as a prefix);
- a number: an account id (and the phone suffix above);
- a UID or its prefix (4 characters or more of hex and '-');
- an IP address or its prefix (`10.1.`, `2001:db8:`): sessions and events by their
  `ip`; on the accounts page, the accounts with sessions from it.

Each form is one bounded range of one index (`Accounts.ids_in_range`, at most
SEARCH_CAP + 1 ids each); every match says what it matched by (`matched_by`: "id 134",
"phone ending 0134", …). A text that matches nothing is an empty result, never a 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .common import parse_ip
from .errors import InvalidRequest
from .validation import email_key, normalize_phone, search_key

if TYPE_CHECKING:
    from .accounts import Accounts
    from .sessions import Sessions

# How many matches a search collects, per form and in all ("1,000+" beyond).
SEARCH_CAP = 1000
# Fewest digits read as the end of a phone number (fewer match too many numbers).
SUFFIX_DIGITS = 4
# Fewest characters read as a UID prefix.
UID_PREFIX = 4
# Where a short prefix is cut into ranges: the embedded database walks a whole range
# even under a limit, so a one-character prefix (1/26 of all names) is read in slices,
# stopping once SEARCH_CAP are found. Together the slices cover every string.
SLICE_AT = ("", "0", "a", "e", "i", "m", "q", "u", "\uffff")
PHONE_CHARS_RE = re.compile(r"\+?[0-9 ().\-/]+")
UID_RE = re.compile(r"[0-9a-f-]+")
IPV4_PREFIX_RE = re.compile(r"\d{1,3}(\.\d{0,3}){1,3}")
IPV6_PREFIX_RE = re.compile(r"[0-9a-f]{0,4}(:[0-9a-f]{0,4}){1,7}")
DOMAIN_RE = re.compile(r"[^@\s]*\.[^@\s.]*")


@dataclass(frozen=True)
class Terms:
    """What one search text is tried as (None: not that)."""

    text: str  # as typed, trimmed: what the search box keeps
    key: str  # `search_key(text)`: names, e-mail prefixes
    number: int | None = None  # an account id
    e164: str | None = None  # a whole phone number
    suffix: str | None = None  # a phone number's last digits
    uid: str | None = None  # a UID prefix
    domain: str | None = None  # an e-mail domain prefix
    ip: str | None = None  # a whole IP address, canonical
    ip_prefix: str | None = None  # the start of an IP address


@dataclass
class Match:
    """An account a search found, and every way it matched, in the order found."""

    id: int
    matched_by: list[str] = field(default_factory=list)


def parse(q: str | None, region: str) -> Terms | None:
    """The forms a search text can take (None for an empty text)."""
    text = (q or "").strip()
    key = search_key(text)
    if not key:
        return None
    if "\x00" in key:
        raise InvalidRequest("'q' must not contain NUL characters", field="q")
    digits = re.sub(r"\D", "", key) if PHONE_CHARS_RE.fullmatch(key) else ""
    found: dict[str, Any] = {
        "number": int(key) if key.isascii() and key.isdigit() and len(key) < 12 else None,
        "suffix": digits if len(digits) >= SUFFIX_DIGITS else None,
        "e164": _phone(key, region) if len(digits) >= 6 else None,
        "uid": key if len(key) >= UID_PREFIX and UID_RE.fullmatch(key) else None,
        "domain": _domain(key),
    }
    address = parse_ip(key) if re.fullmatch(r"[0-9a-f.:\[\]]+", key) else None
    if address is not None:
        found["ip"] = str(address)
    elif IPV4_PREFIX_RE.fullmatch(key) or IPV6_PREFIX_RE.fullmatch(key):
        found["ip_prefix"] = key
    if address is not None or "ip_prefix" in found:  # 10.1.1.1 is no phone number
        found.update(suffix=None, e164=None)
    return Terms(text=text, key=key, **found)


def _phone(key: str, region: str) -> str | None:
    try:
        return normalize_phone(key, region)
    except InvalidRequest:
        return None


def _domain(key: str) -> str | None:
    """`@example.org` and `@exam` (a domain prefix), or `example.org` (a word with a dot)."""
    if key.startswith("@") and len(key) > 1 and "@" not in key[1:]:
        return key[1:]
    if "@" not in key and DOMAIN_RE.fullmatch(key) and not key.replace(".", "").isdigit():
        return key
    return None


def prefix_slices(prefix: str) -> list[dict[str, str]]:
    """Index ranges that together hold exactly the keys starting with `prefix`, in
    order: one range, or several for a one-character prefix (see SLICE_AT)."""
    if len(prefix) > 1:
        return [{"$gte": prefix, "$lt": prefix + "\uffff"}]
    return [{"$gte": prefix + lo, "$lt": prefix + hi} for lo, hi in zip(SLICE_AT, SLICE_AT[1:], strict=False)]


def phone_rev(e164: str) -> str:
    """A phone number's digits, last first: its endings are prefixes of this."""
    return re.sub(r"\D", "", e164)[::-1]


def email_domain(email: str) -> str:
    return email_key(email).rpartition("@")[2]


def contact_keys(*, email: str | None = None, phone: str | None = None, nickname: str | None = None) -> dict[str, str]:
    """The stored search keys of an account's nickname, e-mail and phone (those it has):
    set on creation, backfilled for accounts from before (`Accounts.backfill_search_keys`)."""
    keys = {}
    if nickname and search_key(nickname):
        keys["nickname_key"] = search_key(nickname)
    if email:
        keys["email_domain"] = email_domain(email)
    if phone:
        keys["phone_rev"] = phone_rev(phone)
    return keys


def key_range(prefix: str) -> dict[str, str]:
    """The keys starting with `prefix`, as one index range."""
    return {"$gte": prefix, "$lt": prefix + "\uffff"}


def ip_filter(terms: Terms) -> str | dict[str, str] | None:
    """The `ip` filter value of a search: the address, or a prefix's range."""
    if terms.ip:
        return terms.ip
    return key_range(terms.ip_prefix) if terms.ip_prefix else None


def _add(found: dict[int, Match], ids: list[int], label: str) -> None:
    for account_id in ids:
        found.setdefault(account_id, Match(account_id)).matched_by.append(label)


async def match_accounts(accounts: Accounts, sessions: Sessions, terms: Terms) -> list[Match]:
    """The accounts a search finds, at most SEARCH_CAP + 1 ("more" beyond): whole
    matches first (id, phone, UID, IP), then prefixes; each with what it matched by."""
    found: dict[int, Match] = {}
    if terms.number is not None:
        _add(found, await accounts.ids_in_range("id", terms.number), f"id {terms.number}")
    if terms.e164:
        _add(found, await accounts.ids_in_range("phone", terms.e164), "phone")
    if terms.suffix:
        ending = await accounts.ids_in_range("phone_rev", key_range(terms.suffix[::-1]))
        _add(found, ending, f"phone ending {terms.suffix}")
    if terms.uid:
        _add(found, await accounts.ids_in_range("uid", key_range(terms.uid)), "uid")
    if terms.ip or terms.ip_prefix:
        ip = ip_filter(terms)
        assert ip is not None
        _add(found, await sessions.account_ids_by_ip(ip, SEARCH_CAP + 1), f"ip {terms.ip or terms.ip_prefix}")
    for index, label, prefix in _prefix_forms(terms):
        for rng in prefix_slices(prefix):
            if len(found) > SEARCH_CAP:
                break
            _add(found, await accounts.ids_in_range(index, rng), label)
    return list(found.values())[: SEARCH_CAP + 1]


def _prefix_forms(terms: Terms) -> list[tuple[str, str, str]]:
    """(index, label, prefix) of the prefix forms: a nickname may hold spaces, a
    username or an e-mail address none."""
    forms = []
    if not terms.key.startswith("@"):
        one_word = not any(c.isspace() for c in terms.key)
        forms += [("username_key", "username", terms.key)] if one_word else []
        forms.append(("nickname_key", "nickname", terms.key))
        forms += [("email_key", "e-mail", terms.key)] if one_word else []
    if terms.domain:
        forms.append(("email_domain", "e-mail domain", terms.domain))
    return forms
