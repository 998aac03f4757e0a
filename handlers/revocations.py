"""`GET /auth/revocations`: the revocation feed for the apps' back ends (issue 19), which
verify JWTs offline and learn here, within about a second, of sessions that ended and
accounts that were disabled (`models/revocations.py`). A service-key route, answered at
the top level like the OAuth endpoints."""

from __future__ import annotations

from typing import Any

from models.revocations import MAX_WAIT, Page, decode_cursor
from models.validation import Field, parse_fields

from .oauth import ServiceClientHandler
from .spec import BOOL, INT, STR, Route, Schema, array, doc, obj

QUERY = {"since": Field(str, max_len=32), "wait": Field(int, lo=0, hi=int(MAX_WAIT))}
NUM: Schema = {"type": "number"}  # seconds since the epoch, to the millisecond
PAGE = obj(
    {
        "sessions": array(obj({"sid": STR, "account_id": INT, "at": NUM})),
        "accounts": array(obj({"account_id": INT, "uid": STR, "disabled": BOOL, "at": NUM})),
        "cursor": STR,
        "more": BOOL,
    }
)


def page_view(page: Page) -> dict[str, Any]:
    return {
        "sessions": [{"sid": s.sid, "account_id": s.account_id, "at": s.at} for s in page.sessions],
        "accounts": [
            {"account_id": a.account_id, "uid": a.uid, "disabled": a.disabled, "at": a.at} for a in page.accounts
        ],
        "cursor": page.cursor,
        "more": page.more,
    }


class RevocationsHandler(ServiceClientHandler):
    """Sessions ended and accounts changed since `since`, with the cursor to ask from
    next; `wait` (≤ 25 s) holds the request while there is nothing new. Without `since`,
    an empty page whose cursor starts from now."""

    tag = "service"
    has_deadline = False  # held on purpose; each look carries the database's own timeout
    sheddable = False  # a subscriber shed in an overload would miss nothing, but retry at once

    @doc(
        "Sessions ended and accounts changed since a cursor (a long poll with `wait`), for apps verifying JWTs offline",
        query=QUERY,
        ok=PAGE,
        raw=True,
    )
    async def get(self) -> None:
        args = parse_fields({k: self.get_query_argument(k, None) for k in QUERY}, QUERY)
        since = decode_cursor(args["since"]) if args.get("since") else None
        page = await self.gatehouse.revocations.wait(
            since, args.get("wait") or 0, stop=lambda: bool(self.application.settings.get("draining"))
        )
        self.reply(page_view(page))


def routes() -> list[Route]:
    return [Route("/auth/revocations", RevocationsHandler)]
