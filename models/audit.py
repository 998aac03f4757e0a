"""The audit log as people read it: who an event is about and who acted, by name; what
a kick ended; and the log as CSV. Pure functions over events and the account names an
`EventPage` carries (`Admin.events`), shared by the console's pages and its CSV export.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from .useragent import describe
from .values import AccountRef

# Actors as the models record them: an administrator (console or admin API), the account
# itself, Gatehouse on its own, a service key.
ACTOR_RE = re.compile(r"(admin|account):([0-9]{1,12})")
ACTORS = {"gatehouse": "system", "service": "service key"}
CSV_COLUMNS = ("time", "type", "outcome", "reason", "account id", "account name", "actor", "ip", "device", "note")
# What a spreadsheet reads as a formula (OWASP's CSV injection list), at a cell's start.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
INNER_FORMULA_RE = re.compile(r"([;,\t|]\s*)([=+\-@])")


def ids_named(events: Iterable[dict]) -> set[int]:
    """The accounts a list of events names: each one's subject and acting account."""
    ids: set[int] = set()
    for event in events:
        if isinstance(event.get("account_id"), int):
            ids.add(event["account_id"])
        m = ACTOR_RE.fullmatch(event.get("actor") or "")
        if m:
            ids.add(int(m.group(2)))
    return ids


def account_label(account_id: int | None, names: dict[int, AccountRef]) -> str:
    """An account's name in a list: username, else phone, else `#id (deleted)`."""
    if account_id is None:
        return ""
    ref = names.get(account_id)
    if ref is None:
        return f"#{account_id} (deleted)"
    return ref.username or ref.phone or f"#{account_id}"


def actor(event: dict, names: dict[int, AccountRef]) -> tuple[str, int | None]:
    """Who did it, as a name and the account to link to (None: not an account)."""
    raw = event.get("actor") or ""
    m = ACTOR_RE.fullmatch(raw)
    if m is None:
        return ACTORS.get(raw, raw), None
    kind, account_id = m.group(1), int(m.group(2))
    if kind == "account" and account_id == event.get("account_id"):
        return "self", None
    label = account_label(account_id, names)
    return (f"{label} (admin)" if kind == "admin" else label), account_id


def target_label(target: Any) -> str:
    """The session a kick ended: `opaque session, Chrome 120 on Windows, 10.0.0.1`."""
    if not isinstance(target, dict):
        return ""
    parts = [f"{target['kind']} session" if target.get("kind") else "session"]
    if target.get("user_agent") is not None:
        parts.append(describe(str(target["user_agent"])))
    if target.get("ip"):
        parts.append(str(target["ip"]))
    if isinstance(target.get("created"), datetime):
        parts.append("started " + target["created"].strftime("%Y-%m-%d %H:%M UTC"))
    return ", ".join(parts)


def csv_cell(value: Any) -> str:
    """A value as a CSV cell a spreadsheet shows as text, never runs: one that starts
    like a formula gets a leading apostrophe."""
    text = "" if value is None else str(value)
    # A spreadsheet in a locale that splits on ";" (or a tab, or "|") would start a new
    # cell there: a formula after one is neutralised too.
    text = text[:1] + INNER_FORMULA_RE.sub(r"\1'\2", text[1:])  # (a leading one: below)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_rows(events: Iterable[dict], names: dict[int, AccountRef]) -> Iterator[list[str]]:
    """The CSV export's rows (`CSV_COLUMNS`), header first."""
    yield list(CSV_COLUMNS)
    for e in events:
        note = " — ".join(x for x in (e.get("note") or "", target_label(e.get("target"))) if x)
        account = account_label(e.get("account_id"), names)
        if e.get("account_id") is None and e.get("login"):
            account = "tried: " + str(e["login"])
        row = [
            e["at"].isoformat(),
            e["type"],
            e.get("outcome"),
            e.get("reason"),
            e.get("account_id"),
            account,
            actor(e, names)[0],
            e.get("ip"),
            describe(e.get("user_agent")) if e.get("user_agent") else "",
            note,
        ]
        yield [csv_cell(v) for v in row]
