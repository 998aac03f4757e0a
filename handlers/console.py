"""The admin console (`/console/`): Jinja pages over the same `models/` operations as
the admin API.

Its login is a session of kind `console` whose token sits in a signed, HttpOnly,
SameSite=Strict cookie (Secure over HTTPS), so it is listed and kickable like any
other. Every POST needs Tornado's XSRF token; pages forbid framing and inline script.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from tornado.web import HTTPError

from models.accounts import AccountPage, account_view
from models.admin import EXPORT_CAP, Page, SessionRow, one_of
from models.audit import account_label, csv_rows, target_label
from models.audit import actor as event_actor
from models.errors import (
    ChallengeInvalid,
    CodeInvalid,
    Forbidden,
    InvalidCredentials,
    InvalidRequest,
    MfaEnrolmentRequired,
    MfaRequired,
    NotAuthenticated,
    NotFound,
    Overloaded,
)
from models.events import EVENT_TYPES
from models.sessions import KINDS
from models.useragent import describe
from models.validation import Field, parse_fields
from models.values import Account, Assurance, OpaqueLogin, Session

from .admin_api import parse_time, sane_time
from .base import GatehouseHandler, translate
from .fields import (
    ACCOUNT_REF,
    ACCOUNT_SORT,
    ACTIVE,
    CODE,
    CURSOR,
    EVENT_TYPE,
    IP_PREFIX,
    LIST_ORDER,
    LOGIN_NAME,
    OUTCOME,
    PAGE,
    PASSWORD,
    SEARCH,
    SESSION_KIND,
    SORT_ORDER,
    START,
    TIME,
    TIME_ZONE,
)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
# Sent by static/console.js on the sessions table's self-refresh: see ConsoleHandler.prepare.
REFRESH_HEADER = "X-Gatehouse-Refresh"
# Where a `next` may lead: a console path in printable ASCII, no backslash.
SAFE_TARGET_RE = re.compile(r"/console/[!-\[\]-~]*")
DONE = {
    "kicked": "Session kicked.",
    "kicked_all": "Every session of this account was kicked.",
    "disabled": "Account disabled; its sessions were ended.",
    "enabled": "Account enabled.",
    "reset_sent": "A password-reset code was sent.",
    "mfa_reset": "Every second factor of the account was removed; its owner was told.",
    "passkey_removed": "The passkey was removed; its owner was told.",
    "reset_nowhere": "This account has no e-mail or phone to send a code to.",
    "unlocked": "The account's login lock and failed-login count were cleared.",
}


def ago(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "never"
    delta = int(((now or datetime.now(UTC)) - when).total_seconds())
    if delta < 45:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if delta >= size:
            return f"{delta // size} {unit} ago"
    return "just now"


def exact(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


def console_target(raw: str | None, default: str) -> str:
    """Where a `next` parameter may send the browser after login or a form: only inside
    the console. Another site, `//host`, a backslash, non-ASCII text or CR/LF (which
    would split the Location header) all mean `default`."""
    target = (raw or "").split("#")[0]
    return target if SAFE_TARGET_RE.fullmatch(target) else default


def console_templates(settings: dict) -> Environment:
    env = settings.get("console_templates")
    if env is None:
        env = Environment(
            loader=FileSystemLoader(settings["template_path"]),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        env.filters.update(ago=ago, exact=exact, device=describe)
        env.globals.update(account_label=account_label, event_actor=event_actor, target_label=target_label)
        settings["console_templates"] = env
    return env


def page_headers(handler: GatehouseHandler) -> None:
    """The headers of every HTML page Gatehouse serves (the console, /passkeys/): no
    caching, no framing, no script or style but our own files."""
    handler.common_headers()
    handler.set_header("Content-Type", "text/html; charset=UTF-8")
    handler.set_header("Cache-Control", "no-store")
    handler.set_header("Content-Security-Policy", CSP)
    handler.set_header("X-Frame-Options", "DENY")


class ConsoleHandler(GatehouseHandler):
    style = "console"
    login_required = True
    # Who is logged in to the console (an administrator, checked in `prepare`), and with
    # which session. `self.admin` is the admin service, as on every handler.
    operator: Account | None = None
    console_session: Session | None = None

    def set_default_headers(self) -> None:
        page_headers(self)

    # Over HTTPS the cookies are `__Host-` cookies (Secure, Path=/, no Domain: no other
    # host or path can plant or shadow them); plain HTTP (development) cannot have those.
    @property
    def cookie(self) -> str:
        return "__Host-gh_console" if self.is_https else "gh_console"

    @property
    def settings(self) -> dict[str, Any]:
        # Tornado reads the XSRF cookie's name from the settings.
        shared = self.application.settings
        return {**shared, "xsrf_cookie_name": "__Host-gh_xsrf" if self.is_https else "gh_xsrf"}

    def set_cookie(self, name: str, value: str | bytes, **kw: Any) -> None:  # type: ignore[override]
        # Every console cookie (the session and Tornado's XSRF one) gets the same protection.
        kw.setdefault("httponly", True)
        kw.setdefault("samesite", "Strict")
        if name.startswith("__Host-"):
            kw.update(path="/", secure=True, domain=None)
        else:
            kw.setdefault("path", "/console/")
        super().set_cookie(name, value, **kw)

    def clear_console_cookie(self) -> None:
        self.clear_cookie(self.cookie, path="/" if self.is_https else "/console/")

    def check_xsrf_cookie(self) -> None:
        """Tornado's XSRF token is not bound to the session, so also refuse any POST a
        browser says came from another site (Fetch metadata, then Origin). It runs
        before `prepare`, so an oversized form is refused here first."""
        self.refuse_large_body()
        site = self.request.headers.get("Sec-Fetch-Site")
        origin = self.request.headers.get("Origin")
        own = ("https" if self.is_https else "http") + "://" + self.request.host
        # Our Referrer-Policy (no-referrer) makes browsers send `Origin: null` on our own
        # posts, so Origin is only consulted when Fetch metadata is missing (old browsers).
        cross = site not in ("same-origin", "none") if site else bool(origin) and origin not in (own, "null")
        if cross:
            raise HTTPError(403, "Cross-site form posts are refused.")
        try:
            super().check_xsrf_cookie()
        except HTTPError:
            raise HTTPError(403, "This form's XSRF token is missing or wrong; reload the page and try again.") from None

    @property
    def is_self_refresh(self) -> bool:
        """The sessions table refreshing itself every few seconds (static/console.js):
        not the operator at work, so it must not keep an untouched tab logged in."""
        return self.request.headers.get(REFRESH_HEADER) == "1"

    def refuse_large_body(self) -> None:
        if self.body_too_large():
            raise HTTPError(413, f"The form is over {self.config.server.max_body_bytes} bytes.")

    async def prepare(self) -> None:
        self.shed_if_overloaded()
        self.refuse_large_body()
        token = self.get_signed_cookie(self.cookie, max_age_days=31)
        if token:
            try:
                caller = await self.resolver.resolve(
                    token.decode(), kinds=("console",), touch=not self.is_self_refresh, client=self.ip_key
                )
                self.operator, self.console_session = caller.account, caller.session
            except NotAuthenticated:
                self.clear_console_cookie()
        if not self.login_required:
            return
        if self.operator is None:
            if self.request.method in ("GET", "HEAD"):
                self.redirect("/console/login?" + urlencode({"next": self.request.uri}))
                return
            raise HTTPError(403, "log in to the console first")
        if not self.operator.is_admin:
            raise HTTPError(403, "this page is for administrators")

    @property
    def actor(self) -> str:
        assert self.operator is not None
        return f"admin:{self.operator.id}"

    def page(self, template: str, status: int = 200, **values: Any) -> None:
        env = console_templates(self.application.settings)
        html = env.get_template(f"console/{template}").render(
            admin=self.operator,
            console_session=self.console_session,
            xsrf=Markup(self.xsrf_form_html()),
            static=self.static_url,
            path=self.request.path,
            uri=self.request.uri,
            outbox=not self.config.production,
            done=DONE.get(self.get_query_argument("done", "")),
            **values,
        )
        self.set_status(status)
        self.finish(html)

    def args(self, spec: dict[str, Field]) -> dict[str, Any]:
        return parse_fields({k: self.get_argument(k, None) or None for k in spec}, spec)

    def back(self, default: str, done: str) -> None:
        """Redirect after a POST, only ever inside the console."""
        target = console_target(self.get_body_argument("next", None), default)
        sep = "&" if "?" in target else "?"
        self.redirect(f"{target}{sep}done={done}", status=303)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = self.failure(kwargs)
        status, code, message = translate(exc, status_code)
        self.clear_header("Content-Type")
        self.set_default_headers()
        if isinstance(exc, Overloaded):
            self.set_header("Retry-After", str(exc.retry_after))
        try:
            self.page("error.html", status=status, status_code=status, code=code, message=message)
        except Exception:  # noqa: BLE001 - the error page must not fail into a traceback
            self.set_status(status)
            self.finish(f"{status} {code}")


class LoginHandler(ConsoleHandler):
    login_required = False

    def next_url(self) -> str:
        return console_target(self.get_argument("next", None), "/console/")

    async def get(self) -> None:
        if self.operator is not None and self.operator.is_admin:
            self.redirect(self.next_url())
            return
        self.page("login.html", next=self.next_url(), error=None)

    async def post(self) -> None:
        f = parse_fields(
            {k: self.get_body_argument(k, None) for k in ("username", "password")},
            {"username": LOGIN_NAME, "password": PASSWORD},
        )
        ctx = self.context()
        try:
            # A non-admin's right password is a failed console login like any other (it
            # counts, and answers as a wrong password): the console is no oracle for
            # testing stolen credentials unseen.
            login = await self.auth.login_password(
                f["username"], f["password"], ctx, kind="console", admit=lambda account: account.is_admin
            )
        except InvalidCredentials as e:
            self.page("login.html", status=401, next=self.next_url(), error=e.message, username=f["username"])
            return
        except MfaRequired as e:  # the password was right; the second step comes next
            self.page("login.html", next=self.next_url(), error=None, mfa=e.details["mfa"])
            return
        except MfaEnrolmentRequired as e:  # GATEHOUSE_MFA: an authenticator app first
            await self.enrol_page(e.details["mfa_enrolment"]["token"])
            return
        self.start(login.token)

    async def enrol_page(
        self, enrol_token: str, error: str | None = None, status: int = 200, *, factor_id: str | None = None
    ) -> None:
        """The authenticator app to add: a new one, or (`factor_id`, after a mistyped
        first code) the one already shown, whose QR code the administrator has scanned."""
        caller = await self.resolver.resolve(enrol_token, kinds=("enrol",), touch=False)
        if factor_id is None:
            await self.gatehouse.factors.drop_pending(caller.account.id, "console")
            enrolment = await self.gatehouse.mfa.enrol_totp(caller, "console", self.context())
        else:
            enrolment = await self.gatehouse.factors.pending(caller.account, factor_id)
        enrol = {
            "token": enrol_token,
            "factor": enrolment.factor.id,
            "secret": enrolment.secret,
            "qr": Markup(enrolment.qr_svg),  # noqa: S704 - segno's SVG of our own otpauth:// URI
        }
        self.page("login.html", status=status, next=self.next_url(), error=error, enrol=enrol)

    def start(self, token: str) -> None:
        self.set_signed_cookie(self.cookie, token, expires_days=None)
        self.redirect(self.next_url(), status=303)


class LoginEnrolHandler(LoginHandler):
    """GATEHOUSE_MFA: an administrator without a second factor adds an authenticator app
    at the console login, and is logged in at aal2 with its first code."""

    async def get(self) -> None:
        self.redirect("/console/login", status=303)

    async def post(self) -> None:
        f = parse_fields(
            {k: self.get_body_argument(k, None) for k in ("enrol", "factor", "code")},
            {
                "enrol": Field(str, required=True, max_len=128),
                "factor": Field(str, required=True, max_len=32),
                "code": CODE,
            },
        )
        ctx = self.context()
        try:
            caller = await self.resolver.resolve(f["enrol"], kinds=("enrol",), touch=False)
            # Only an enrolment the console's own login started, for an administrator:
            # an API login's enrolment token never becomes a console session.
            if caller.session.style != self.style or not caller.account.is_admin:
                raise NotAuthenticated("log in to the console first")
            done = await self.gatehouse.mfa.confirm_totp(caller, f["factor"], f["code"], ctx)
        except (NotAuthenticated, NotFound, Forbidden) as e:
            self.page("login.html", status=401, next=self.next_url(), error=e.message)
            return
        except CodeInvalid as e:
            await self.enrol_page(f["enrol"], e.message, 400, factor_id=f["factor"])
            return
        account = await self.accounts.get(caller.account.id)
        login = await self.auth.opaque_login(account, ctx, kind="console", assurance=Assurance(2, ("pwd", "totp")))
        self.set_signed_cookie(self.cookie, login.token, expires_days=None)
        self.page("recovery_codes.html", codes=done.recovery_codes or [], next=self.next_url())


class LoginMfaHandler(LoginHandler):
    """The console login's second step, for an administrator with a second factor."""

    async def get(self) -> None:
        self.redirect("/console/login", status=303)

    async def post(self) -> None:
        f = parse_fields(
            {k: self.get_body_argument(k, None) for k in ("challenge", "code")},
            {"challenge": Field(str, required=True, max_len=128), "code": CODE},
        )
        try:
            login = await self.gatehouse.mfa.verify(f["challenge"], f["code"], self.context(), kinds=("console",))
        except CodeInvalid as e:  # the same challenge may try again, up to its cap
            mfa = {"challenge": f["challenge"]}
            self.page("login.html", status=400, next=self.next_url(), error=e.message, mfa=mfa)
            return
        except ChallengeInvalid as e:
            self.page("login.html", status=401, next=self.next_url(), error=e.message)
            return
        assert isinstance(login, OpaqueLogin) and login.session.kind == "console"
        self.start(login.token)


class LogoutHandler(ConsoleHandler):
    async def post(self) -> None:
        assert self.console_session is not None
        await self.auth.logout(self.console_session, self.context())
        self.clear_console_cookie()
        self.set_header("Clear-Site-Data", '"cache", "cookies", "storage"')
        self.redirect("/console/login", status=303)


class DashboardHandler(ConsoleHandler):
    async def get(self) -> None:
        stats = await self.admin.dashboard()
        recent = await self.admin.events(limit=15)
        peak = max([1] + [h["login_ok"] + h["login_failed"] for h in stats["by_hour"]])
        self.page("dashboard.html", stats=stats, events=recent.items, names=recent.names, peak=peak)


SESSION_FILTERS = {
    "q": SEARCH,
    "account": ACCOUNT_REF,
    "kind": SESSION_KIND,
    "active": ACTIVE,
    "cursor": CURSOR,
    "order": LIST_ORDER,
    "start": START,
}
EVENT_FILTERS = {
    "q": SEARCH,
    "account": ACCOUNT_REF,  # the same as `q`, for older links
    "type": EVENT_TYPE,
    "outcome": OUTCOME,
    "ip": IP_PREFIX,
    "since": TIME,
    "until": TIME,
    "tz": TIME_ZONE,
    "last": Field(str, max_len=4),
    "cursor": CURSOR,
}
# The audit log's time presets: `last=<key>` sets the range to end now.
PRESETS = {"1h": ("Last hour", timedelta(hours=1)), "24h": ("Last 24 h", timedelta(hours=24))}
PRESETS["7d"] = ("Last 7 days", timedelta(days=7))
LOCAL_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?")
ZONE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}")
# The accounts table's sortable columns: (sort key, header).
ACCOUNT_COLUMNS = (("created", "Created"), ("last_active", "Last active"), ("sessions", "Sessions"))


def showing(start: int, shown: int, count: int | None, capped: bool, oldest: bool) -> str:
    """ "51–100 of 1,000" for a cursor page (positions counted from the newest; `start`
    is the page's first row's, from the list's end when it runs `oldest` first)."""
    if count is None or not shown:
        return ""
    total = f"{count:,}+" if capped else f"{count:,}"
    first, last = start, start + shown - 1
    if oldest and not capped:
        first, last = count - last + 1, count - start + 1
    elif oldest:
        return f"the oldest {start:,}–{last:,} of {total}"
    return f"{first:,}–{last:,} of {total}"


class SessionsHandler(ConsoleHandler):
    template = "sessions.html"
    counted = True  # the page says "1–50 of 1,000"; its self-refresh (rows only) does not count

    async def get(self) -> None:
        """The sessions list; `q` searches (models/search.py: a miss is an empty list,
        never a 404); `account=` (the account page's link) names one account exactly;
        `order=oldest` starts from the list's end."""
        f = self.args(SESSION_FILTERS)
        oldest = one_of("order", f.get("order") or "newest", ("newest", "oldest")) == "oldest"
        account = await self.admin.find_account(f.get("account"))
        if f.get("account") and account is None:
            page: Page[SessionRow] = Page([], None, count=0)
        else:
            page = await self.admin.sessions(
                account=account,
                q=None if account else f.get("q"),
                kind=f.get("kind"),
                active=f.get("active") == "1",
                limit=50,
                cursor=f.get("cursor"),
                oldest=oldest,
                counted=self.counted,
            )
        by_account = not any(label.startswith("ip ") for labels in page.matched_by.values() for label in labels)
        if account is None and len(page.matched_by) == 1 and by_account:  # one account found: its "kick all"
            account = await self.admin.find_account(str(next(iter(page.matched_by))))
        rows = page.items[::-1] if oldest else page.items  # a page reads newest first either way
        start = f.get("start", 1)
        query = {k: v for k, v in f.items() if v and k not in ("cursor", "order", "start")}
        self.page(
            self.template,
            sessions=rows,
            account=account,
            filters=query,
            q=f.get("q") or f.get("account") or "",
            kinds=KINDS,
            matched=await self.matched_names(page.matched_by),
            showing=showing(start, len(rows), page.count, page.capped, oldest),
            oldest=oldest,
            next_url=list_url(query, page.next, start + len(rows), oldest) if page.next else None,
            first_url=list_url(query) if f.get("cursor") or oldest else None,
            last_url=list_url(query, None, 1, True) if page.next or f.get("cursor") else None,
            now=self.clock(),
            back=self.request.uri.replace("/console/sessions/rows", "/console/sessions", 1),
        )

    async def matched_names(self, matched: dict[int, list[str]]) -> list[dict[str, Any]]:
        """The accounts a search matched, named, with what they matched by."""
        if not matched:
            return []
        refs = await self.accounts.refs(matched)
        named = [(i, refs.get(i)) for i in matched]
        return [{"id": i, "name": (r and (r.username or r.phone)) or f"#{i}", "by": matched[i]} for i, r in named]


def list_url(query: dict[str, Any], cursor: str | None = None, start: int = 1, oldest: bool = False) -> str:
    """A sessions list URL with its filters, a cursor page's position, `order=oldest`."""
    extra: dict[str, Any] = {"cursor": cursor} if cursor else {}
    if start > 1 or cursor:
        extra["start"] = start
    if oldest:
        extra["order"] = "oldest"
    return "/console/sessions?" + urlencode({**query, **extra})


class SessionRowsHandler(SessionsHandler):
    """The table body alone, for the page's self-refresh."""

    template = "_session_rows.html"
    counted = False


ACCOUNT_SEARCH = {"q": SEARCH, "page": PAGE, "sort": ACCOUNT_SORT, "order": SORT_ORDER}


class AccountsHandler(ConsoleHandler):
    async def get(self) -> None:
        """Accounts, all or a search's (models/search.py), sortable by the columns in
        ACCOUNT_COLUMNS, a page of 50 with "page N of M" and first/previous/next/last."""
        f = self.args(ACCOUNT_SEARCH)
        page, q, sort = f.get("page", 1), f.get("q") or "", f.get("sort")
        desc = one_of("order", f.get("order") or "asc", ("asc", "desc")) == "desc"
        found = await self.admin.account_page(page=page, limit=50, q=q, sort=sort, desc=desc)

        def url(**change: Any) -> str:
            args = {"q": q, "sort": sort, "order": "desc" if desc else None, "page": page, **change}
            return "/console/accounts?" + urlencode({k: v for k, v in args.items() if v and (k, v) != ("page", 1)})

        self.page(
            "accounts.html",
            accounts=account_rows(found),
            locks=await self.admin.lock_statuses([a.id for a in found.accounts]),
            q=q,
            total=found.count,
            capped=found.capped,
            page_no=page,
            pages=found.pages,
            more=found.more,
            sort=sort or "",
            order="desc" if desc else "asc",
            columns=sort_columns(sort, desc, bool(q), url),
            pager={
                "first": url(page=1) if page > 1 else None,
                "previous": url(page=page - 1) if page > 1 else None,
                "next": url(page=page + 1) if found.more else None,
                "last": url(page=found.pages) if page < found.pages else None,
            },
            now=self.clock(),
        )


def account_rows(found: AccountPage) -> list[dict[str, Any]]:
    """The accounts table's rows: each account's view, what a search matched it by, and
    its session count and last activity."""
    rows = []
    for a in found.accounts:
        sessions, last = found.activity.get(a.id, (0, None))
        matched = found.matched_by.get(a.id, [])
        rows.append(
            {**account_view(a), "created_at": a.created, "matched_by": matched, "sessions": sessions, "last": last}
        )
    return rows


def sort_columns(sort: str | None, desc: bool, searching: bool, url: Any) -> dict[str, dict[str, Any]]:
    """Each sortable column's link (the other order when it is the current sort) and its
    aria-sort. Last activity and sessions sort a search's matches only."""
    columns = {}
    for key, header in ACCOUNT_COLUMNS:
        current = (sort or "created") == key and (sort is not None or not searching)
        aria = ("descending" if desc else "ascending") if current else "none"
        link = url(sort=key, order="asc" if current and desc else "desc", page=1)
        sortable = key == "created" or searching
        columns[key] = {"header": header, "aria": aria, "url": link if sortable else None}
    return columns


class AccountHandler(ConsoleHandler):
    async def get(self, account_id: str) -> None:
        overview = await self.admin.account_overview(int(account_id))
        now = self.clock()
        self.page(
            "account.html",
            account=account_view(overview.account),
            sessions=overview.sessions,
            events=overview.events,
            names=overview.names,
            factors=overview.factors,
            recovery_left=overview.recovery_left,
            passkeys=overview.passkeys,
            has_mfa=bool(overview.account.mfa),
            now=now,
            created=overview.account.created,
            style=overview.account.style,
            last_login=overview.last_login,
            live_sessions=overview.live_sessions(now),
            lock=overview.lock,
        )


@dataclass(frozen=True)
class EventFilters:
    """The audit log's filters as the console's form and links carry them. Times typed
    in the form are the browser's local time in zone `tz` (console-time.js sends it);
    without it (no JavaScript) they are UTC, and the form says so."""

    q: str | None
    query: dict[str, str]  # the filters to repeat in links (no cursor)
    zone: ZoneInfo | None
    preset: str | None
    since: datetime | None
    until: datetime | None
    cursor: str | None
    admin_filters: dict[str, Any]  # for `Admin.events` / `export_events`, but the account
    account: str | None = None  # `account=`: one account, named exactly


class EventsHandler(ConsoleHandler):
    def event_filters(self) -> EventFilters:
        f = self.args(EVENT_FILTERS)
        zone = form_zone(f.get("tz"))
        preset = f.get("last")
        if preset is not None and preset not in PRESETS:
            raise InvalidRequest(f"'last' must be one of {', '.join(PRESETS)}", field="last")
        since = self.clock() - PRESETS[preset][1] if preset else form_time("since", f.get("since"), zone)
        until = None if preset else form_time("until", f.get("until"), zone)
        query = {k: v for k, v in f.items() if v and k != "cursor"}
        kwargs = {"type": f.get("type"), "outcome": f.get("outcome"), "ip": f.get("ip"), "since": since, "until": until}
        return EventFilters(f.get("q"), query, zone, preset, since, until, f.get("cursor"), kwargs, f.get("account"))

    async def search_scope(self, f: EventFilters) -> tuple[dict[str, Any], bool]:
        """The search box (models/search.py): an address or its prefix, or the accounts
        the text matches, as `Admin.events` filters; and whether it matched no account
        (an empty list with the text kept, never a 404)."""
        if f.account:  # `account=` (the account page's link) names one account exactly
            account = await self.admin.find_account(f.account)
            return ({"account": account}, False) if account else ({"account_ids": []}, True)
        scope = await self.admin.search_scope(f.q)
        return {"account_ids": scope.account_ids, "ip_prefix": scope.ip_prefix}, scope.account_ids == []

    async def get(self) -> None:
        f = self.event_filters()
        scope, missing = await self.search_scope(f)
        page = await self.admin.events(limit=50, cursor=f.cursor, **f.admin_filters, **scope)
        links = {k: v for k, v in f.query.items() if k not in ("since", "until", "last")}
        self.page(
            "events.html",
            events=page.items,
            names=page.names,
            searched_to=page.searched_to,
            filters=f.query,
            missing_account=missing,
            zone=f.zone.key if f.zone else None,
            since_value=form_value(f.since, f.zone),
            until_value=form_value(f.until, f.zone),
            presets=preset_links(links),
            preset=f.preset,
            types=EVENT_TYPES,
            next_url=("/console/events?" + urlencode({**f.query, "cursor": page.next})) if page.next else None,
            first_url=("/console/events?" + urlencode(f.query)) if f.cursor else None,
            csv_url="/console/events.csv?" + urlencode(f.query),
            now=self.clock(),
        )


class EventsCsvHandler(EventsHandler):
    """The audit log's filtered view as CSV (`Admin.export_events`), at most
    `EXPORT_CAP` rows; a capped file says so in its last line."""

    export_cap = EXPORT_CAP

    async def get(self) -> None:
        f = self.event_filters()
        scope, _ = await self.search_scope(f)
        export = await self.admin.export_events(self.export_cap, **f.admin_filters, **scope)
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL)  # every cell one cell, whatever the locale splits on
        writer.writerows(csv_rows(export.items, export.names))
        if not export.complete:
            writer.writerow([f"# capped at {len(export.items)} events: narrow the filters to export the rest"])
        stamp = self.clock().strftime("%Y%m%d-%H%M%S")
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="gatehouse-events-{stamp}.csv"')
        self.finish(out.getvalue())


def preset_links(query: dict[str, str]) -> list[tuple[str, str, str]]:
    """(key, label, URL) of each time preset, keeping the other filters."""
    return [(key, label, "/console/events?" + urlencode({**query, "last": key})) for key, (label, _) in PRESETS.items()]


def form_zone(name: str | None) -> ZoneInfo | None:
    """The browser's time zone (an IANA name); None, meaning UTC, when it sent none or
    one this server does not know."""
    if not name or not ZONE_RE.fullmatch(name):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def form_time(name: str, value: str | None, zone: ZoneInfo | None) -> datetime | None:
    """A time from the filter form: ISO 8601 with a zone as given, or the zone-less
    `YYYY-MM-DDTHH:MM[:SS]` of `<input type="datetime-local">` in `zone` (else UTC)."""
    if not value:
        return None
    if LOCAL_TIME_RE.fullmatch(value):
        try:
            local = datetime.fromisoformat(value).replace(tzinfo=zone or UTC)
        except ValueError:
            raise InvalidRequest(f"'{name}' is not a date and time", field=name) from None
        return sane_time(name, local)
    return parse_time(name, value)


def form_value(when: datetime | None, zone: ZoneInfo | None) -> str:
    """A time as `<input type="datetime-local">` shows it, in the form's zone."""
    return when.astimezone(zone or UTC).strftime("%Y-%m-%dT%H:%M") if when else ""


class OutboxHandler(ConsoleHandler):
    async def get(self) -> None:
        if self.config.production:
            raise HTTPError(404, "the outbox exists only in development")
        self.page("outbox.html", messages=await self.admin.outbox(), now=self.clock())


class AliveHandler(ConsoleHandler):
    """Whether this tab's console session is still alive: 204, or (through `prepare`)
    the login page. static/console.js asks it on pages that do not refresh themselves,
    with the self-refresh header, so asking keeps nothing alive."""

    async def get(self) -> None:
        self.set_status(204)
        self.finish()


class ConsoleNotFoundHandler(ConsoleHandler):
    """Any other /console/ path: the console's 404 page, with its headers, logged in
    or not (the console's paths are no secret)."""

    login_required = False

    def check_xsrf_cookie(self) -> None:
        """No form posts here: every method is the 404 page."""

    def xsrf_form_html(self) -> str:
        # A page for no one logged in has no form: no XSRF cookie is handed out to an
        # unknown path (a logged-in operator's header has its logout form, as always).
        return super().xsrf_form_html() if self.operator is not None else ""

    async def prepare(self) -> None:
        await super().prepare()
        raise HTTPError(404, "There is no such page in the console.")


def routes() -> list[tuple[str, type]]:
    return [
        (r"/console/?", DashboardHandler),
        (r"/console/login", LoginHandler),
        (r"/console/login/mfa", LoginMfaHandler),
        (r"/console/login/enrol", LoginEnrolHandler),
        (r"/console/logout", LogoutHandler),
        (r"/console/sessions", SessionsHandler),
        (r"/console/sessions/rows", SessionRowsHandler),
        (r"/console/accounts", AccountsHandler),
        (r"/console/accounts/([0-9]{1,12})", AccountHandler),
        (r"/console/events", EventsHandler),
        (r"/console/events\.csv", EventsCsvHandler),
        (r"/console/outbox", OutboxHandler),
        (r"/console/alive", AliveHandler),
        (r"/console/.*", ConsoleNotFoundHandler),  # last: the console's own 404 page
    ]
