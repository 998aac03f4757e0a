"""The one search rule (models/search.py) on the console's accounts, sessions and events
pages and the admin API: every form of a search text finds its account and says what it
matched by, a miss is an empty 200 that keeps the text, the accounts table sorts and
pages to its end, the sessions list counts and jumps to its oldest; and (the scale
test) at 100,000 accounts every query a search sends is a bounded range of an index,
shown by the database's own explain()."""

from __future__ import annotations

import html
import os
import random
import re
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from devdb import EmbeddedMongo
from models.common import Context
from models.search import contact_keys
from models.validation import email_key, username_key
from models.values import Account, Assurance
from tests.test_console import console  # noqa: F401 - the fixture


@pytest.fixture
async def admin_console(console, admin):  # noqa: F811 - `console` is the fixture
    r = await console.login(admin["username"])
    assert r.status_code == 303
    return console


NAMES = {
    "cyrillic": "Дмитрий Иванов",
    "greek": "Σοφία Παππά",
    "cjk": "山田太郎",
    "arabic": "محمد علي",
    "fullwidth": "Ｔａｒｏ Ｗｉｄｅ",
}


async def make(gatehouse, *, nickname: str = "", phone: str | None = None, email: str | None = None) -> Account:
    name = "u" + uuid.uuid4().hex[:10]
    return await gatehouse.accounts.create(
        password=None, username=name, email=email or f"{name}@{name[:6]}.example.org", phone=phone, nickname=nickname
    )


async def session_from(gatehouse, account: Account, ip: str, kind: str = "opaque") -> None:
    await gatehouse.sessions.create(
        account, kind, Context(ip=ip), idle_seconds=3600, max_seconds=86400, assurance=Assurance(1, ("pwd",))
    )


def rows(page: str) -> dict[int, str]:
    """The accounts table's rows by account id."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    found = {}
    for row in re.findall(r"<tr>.*?</tr>", body, re.S):
        m = re.search(r'href="/console/accounts/(\d+)"', row)
        if m:
            found[int(m.group(1))] = html.unescape(row)
    return found


async def search(admin_console, api, admin, q: str) -> tuple[dict[int, str], dict[str, list[str]]]:
    """The console's accounts page and the admin API for one search text."""
    page = await admin_console.get("/console/accounts?q=" + quote(q))
    assert page.status_code == 200, (q, page.status_code)
    assert f'value="{html.escape(q)}"' in page.text, "the search box keeps the text"
    r = await api.get("/admin/api/accounts?q=" + quote(q), token=admin["token"])
    assert r.status == 200, r.data
    return rows(page.text), r.data["matchedBy"]


async def test_each_form_of_a_search_finds_its_account(admin_console, api, admin, gatehouse):
    phone = "+18888888888"
    alice = await make(gatehouse, phone=phone, email="Alice.Smith@Example-Search.org")
    alice = await gatehouse.accounts.get(alice.id)
    by_script = {k: await make(gatehouse, nickname=v) for k, v in NAMES.items()}
    await session_from(gatehouse, alice, "10.77.3.4")
    await session_from(gatehouse, by_script["greek"], "2001:db8:77::5")
    cases = [
        (alice.username.upper(), alice, "username"),
        ("".join(chr(ord(c) + 0xFEE0) for c in alice.username[:5].upper()), alice, "username"),  # full-width
        ("(888) 888-8888", alice, "phone"),
        ("+1 888 888 8888", alice, "phone"),
        ("888.888.8888", alice, "phone"),
        ("8888888888", alice, "phone"),
        ("8888", alice, "phone ending 8888"),
        (alice.uid[:8].upper(), alice, "uid"),
        ("alice.sm", alice, "e-mail"),
        ("ALICE.SMITH@EXAMPLE-SE", alice, "e-mail"),
        ("@example-search.org", alice, "e-mail domain"),
        ("example-search.org", alice, "e-mail domain"),
        ("10.77.", alice, "ip 10.77."),
        ("10.77.3.4", alice, "ip 10.77.3.4"),
        ("2001:db8:77:", by_script["greek"], "ip 2001:db8:77:"),
        ("дмитрий", by_script["cyrillic"], "nickname"),
        ("ΣΟΦΊΑ", by_script["greek"], "nickname"),
        ("山田", by_script["cjk"], "nickname"),
        ("محمد", by_script["arabic"], "nickname"),
        ("taro", by_script["fullwidth"], "nickname"),
        ("ＴＡＲＯ ｗｉ", by_script["fullwidth"], "nickname"),
    ]
    for q, account, label in cases:
        found, matched = await search(admin_console, api, admin, q)
        assert account.id in found, (q, list(found))
        assert label in found[account.id], (q, found[account.id])
        assert label in matched[str(account.id)], (q, matched)


async def test_a_number_is_tried_as_an_id_and_as_a_phone_ending(admin_console, api, admin, gatehouse):
    first = await make(gatehouse)
    digits = f"{first.id:04d}"
    other = await make(gatehouse, phone=f"+1415{uuid.uuid4().int % 900 + 100}{digits}")
    found, matched = await search(admin_console, api, admin, digits)
    assert "id " + str(first.id) in found[first.id] and f"phone ending {digits}" in found[other.id]
    assert matched[str(first.id)] == [f"id {first.id}"] and matched[str(other.id)] == [f"phone ending {digits}"]
    # The sessions page: the same two accounts' sessions, and what each matched by.
    await session_from(gatehouse, first, "192.0.2.10")
    await session_from(gatehouse, other, "192.0.2.11")
    page = await admin_console.get(f"/console/sessions?q={digits}")
    assert page.status_code == 200 and "192.0.2.10" in page.text and "192.0.2.11" in page.text
    assert f"(id {first.id})" in page.text and f"(phone ending {digits})" in page.text


async def test_a_miss_is_an_empty_page_that_keeps_the_text(admin_console, api, admin):
    for path in (
        "/console/accounts?q=nobody-at-all%20%E2%9C%93",
        "/console/sessions?q=nobody-at-all%20%E2%9C%93",
        "/console/sessions?account=nobody-at-all",
        "/console/events?account=nobody-at-all%20%E2%9C%93",
    ):
        r = await admin_console.get(path)
        assert r.status_code == 200, path
        assert "nobody-at-all" in r.text, path
        assert 'href="/console/accounts/' not in r.text.split("<tbody", 1)[1], path
    assert "No account matches" in (await admin_console.get("/console/accounts?q=zzz-nothing")).text
    for path in ("accounts", "sessions", "events"):
        r = await api.get(f"/admin/api/{path}?q=nobody-at-all", token=admin["token"])
        assert r.status == 200 and not r.data[path] and r.data["matchedBy"] == {}, r.data


async def test_accounts_sort_and_page_to_the_end(admin_console, gatehouse):
    made = [await make(gatehouse, nickname=f"sortme {i:03d}") for i in range(120)]
    last_id = made[-1].id
    page = await admin_console.get("/console/accounts")
    pages = -(-last_id // 50)
    assert f"Page 1 of {pages}" in page.text and 'aria-sort="ascending"' in page.text
    last = re.search(r'<a href="([^"]+)">Last', page.text).group(1)
    end = await admin_console.get(html.unescape(last))
    assert f"Page {pages} of {pages}" in end.text and last_id in rows(end.text) and 'rel="next"' not in end.text
    newest = await admin_console.get("/console/accounts?sort=created&order=desc")
    assert next(iter(rows(newest.text))) == last_id
    # A search's matches sort by session count, with aria-sort on that column.
    busy, idle = made[5], made[6]
    for _ in range(3):
        await session_from(gatehouse, busy, "198.51.100.1")
    await session_from(gatehouse, idle, "198.51.100.2")
    q = quote("sortme 00")
    by_sessions = await admin_console.get(f"/console/accounts?q={q}&sort=sessions&order=desc")
    assert by_sessions.status_code == 200
    ordered = list(rows(by_sessions.text))
    assert ordered[:2] == [busy.id, idle.id] and len(ordered) == 10
    assert re.search(r'<th scope="col" aria-sort="descending"><a [^>]*>Sessions', by_sessions.text)
    wide = await admin_console.get("/console/accounts?q=sortme&page=3")
    assert "Page 3 of 3" in wide.text and len(rows(wide.text)) == 20
    assert all(re.search(r'<td data-label="[^"]+"', td) for td in re.findall(r"<td[^>]*>", wide.text))


async def test_sessions_count_and_jump_to_the_oldest(admin_console, gatehouse, api, admin):
    account = await make(gatehouse)
    now = gatehouse.clock()
    ips = [f"10.9.{i // 250}.{i % 250}" for i in range(1050)]
    docs = [session_doc(account.id, now - timedelta(seconds=30 * i), now, ip) for i, ip in enumerate(ips)]
    await gatehouse.db.sessions.insert_many(docs)
    page = await admin_console.get("/console/sessions?kind=jwt")
    assert "1–50 of 1,050" in page.text
    older = html.unescape(re.search(r'<a href="([^"]+)" rel="next">Older', page.text).group(1))
    assert "51–100 of 1,050" in (await admin_console.get(older)).text
    end_link = html.unescape(re.search(r'<a href="([^"]+)">Oldest', page.text).group(1))
    end = await admin_console.get(end_link)
    assert "1,001–1,050 of 1,050" in end.text and f'id="s-{docs[-1]["_id"]}"' in end.text
    assert f'id="s-{docs[999]["_id"]}"' not in end.text and f'id="s-{docs[1000]["_id"]}"' in end.text
    r = await api.get("/admin/api/sessions?kind=jwt&order=oldest&limit=5", token=admin["token"])
    assert [s["id"] for s in r.data["sessions"]] == [d["_id"] for d in docs[::-1][:5]] and r.data["count"] == 1050
    # An IP prefix: the sessions from it.
    by_ip = await api.get("/admin/api/sessions?q=10.9.4.", token=admin["token"])
    assert by_ip.data["count"] == 50 and {s["ip"][:7] for s in by_ip.data["sessions"]} == {"10.9.4."}


async def test_events_search_by_account_and_ip(admin_console, api, admin, gatehouse):
    one, two = await make(gatehouse, nickname="Ευτυχία"), await make(gatehouse, nickname="ευτυχής")
    for account, ip in ((one, "203.0.113.5"), (two, "203.0.114.6")):
        await gatehouse.events.record("login_ok", Context(ip=ip), account_id=account.id)
    r = await api.get("/admin/api/events?q=" + quote("ΕΥΤΥΧ"), token=admin["token"])
    assert {e["account_id"] for e in r.data["events"]} == {one.id, two.id}
    assert r.data["matchedBy"] == {str(one.id): ["nickname"], str(two.id): ["nickname"]}
    r = await api.get("/admin/api/events?q=203.0.113.", token=admin["token"])
    assert [e["account_id"] for e in r.data["events"]] == [one.id]
    page = await admin_console.get("/console/events?account=203.0.114.6")
    assert page.status_code == 200 and "203.0.114.6" in page.text


async def test_accounts_from_before_get_their_search_keys(gatehouse, admin_console):
    legacy = {
        "id": 900_001,
        "uid": str(uuid.uuid4()),
        "username": "legacyuser",
        "username_key": "legacyuser",
        "email": "old@Legacy-Domain.test",
        "email_key": "old@legacy-domain.test",
        "phone": "+14155550123",
        "nickname": "Ｖｅｒａ",
        "created": gatehouse.clock(),
        "roles": [],
    }
    await gatehouse.db.accounts.insert_one(legacy)
    await gatehouse.db.counters.delete_one({"_id": "search_keys"})
    assert await gatehouse.accounts.backfill_search_keys() == 1
    assert await gatehouse.accounts.backfill_search_keys() == 0  # once per database
    stored = await gatehouse.db.accounts.find_one({"id": 900_001})
    assert stored["nickname_key"] == "vera" and stored["email_domain"] == "legacy-domain.test"
    assert stored["phone_rev"] == "32105555141"
    for q in ("vera", "@legacy-domain.test", "0123"):
        assert 900_001 in rows((await admin_console.get("/console/accounts?q=" + quote(q))).text), q


def session_doc(account_id: int, last_active, now, ip: str) -> dict[str, Any]:
    return {
        "_id": uuid.uuid4().hex,
        "account_id": account_id,
        "kind": "jwt",
        "style": "native",
        "created": last_active,
        "last_active": last_active,
        "idle_seconds": 7 * 86400,
        "absolute_expires_at": now + timedelta(days=30),
        "expires_at": now + timedelta(days=7),
        "ip": ip,
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
        "revoked_at": None,
        "cred_epoch": 0,
        "aal": 1,
        "amr": ["pwd"],
        "auth_time": last_active,
    }


# ---- scale: 100,000 accounts, every search query a bounded index range -----------------


@pytest.fixture(scope="module")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory):
    """This module's own embedded database: 100,000 accounts would leave the run's shared
    one slow (its drop alone takes half a minute) for every test after it. A real
    mongod (TEST_MONGODB_URI) is shared as usual."""
    if os.environ.get("TEST_MONGODB_URI"):
        yield os.environ["TEST_MONGODB_URI"]
        return
    embedded = EmbeddedMongo(tmp_path_factory.mktemp("secantus-search") / "db", test_commands=True)
    yield embedded.start()
    embedded.stop()


SCALE = 100_000
BATCH = 10_000
# Keys (and documents) one query of a search may read: a form's SEARCH_CAP + 1 matches
# and a little slack. The seeded names are spread (random letters of five scripts), so
# every searched prefix below holds far fewer; what is bounded is the range read.
MOST = 1_100
POOLS = {
    "latin": "abcdefghijklmnopqrstuvwxyz",
    "cyrillic": "абвгдежзийклмнопрстуфхцчшщэюя",
    "greek": "αβγδεζηθικλμνξοπρστυφχψω",
    "cjk": "山田太郎花子中村佐藤鈴木高橋伊渡辺小林加吉松井上木清水森池",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
}
TARGETS = {1234: "山田太郎", 2345: "Дмитрий Иванов", 3456: "Σοφία Παππά", 4567: "محمد علي"}


class Finds(monitoring.CommandListener):
    """The reads the administrator client sends, to be explained afterwards."""

    def __init__(self) -> None:
        self.commands: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("find", "aggregate") and event.command.get(event.command_name) in COLLECTIONS:
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


COLLECTIONS = ("accounts", "sessions", "events")


@pytest.fixture
def finds() -> Finds:
    return Finds()


@pytest.fixture
def admin_client_options(finds: Finds) -> dict[str, Any]:
    return {"event_listeners": [finds]}


def scale_account(template: dict, i: int, rng: random.Random) -> dict:
    script = list(POOLS)[i % len(POOLS)]
    pool = POOLS[script]
    name = "".join(rng.choice(POOLS["latin"]) for _ in range(3)) + str(i)
    nickname = TARGETS.get(i) or "".join(rng.choice(pool) for _ in range(3)) + " " + "".join(rng.sample(pool, 4))
    email, phone = f"{name}@d{i % 200}.example.org", f"+1415{2_000_000 + i:07d}"
    return {
        **template,
        "id": 10 + i,
        "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "username": name,
        "username_key": username_key(name),
        "email": email,
        "email_key": email_key(email),
        "phone": phone,
        "nickname": nickname,
        **contact_keys(email=email, phone=phone, nickname=nickname),
    }


@pytest.fixture
async def bulk(gatehouse, mongo_uri: str):
    """The test's database on a client without the server's 5-second operation limit:
    seeding, and dropping the 100,000 accounts before the usual teardown drops the rest."""
    client = AsyncMongoClient(mongo_uri, tz_aware=True)
    yield client[gatehouse.db.name]
    await client[gatehouse.db.name].accounts.drop()
    await client.close()


async def seed_scale(gatehouse, db) -> list[dict]:
    """100,000 accounts shaped like a real one, 1,200 sessions and 600 events."""
    real = await make(gatehouse, phone="+14155550100", nickname="template")
    template = {k: v for k, v in (await db.accounts.find_one({"id": real.id})).items() if k != "_id"}
    rng = random.Random(22)
    accounts = [scale_account(template, i, rng) for i in range(SCALE)]
    # (Dropping the indexes and building them after the inserts is slower on the
    # embedded database: measured 300 s against 80 s.)
    for start in range(0, SCALE, BATCH):
        await db.accounts.insert_many([dict(a) for a in accounts[start : start + BATCH]], ordered=False)
    await db.counters.update_one({"_id": "accounts"}, {"$set": {"seq": 10 + SCALE}}, upsert=True)
    now = gatehouse.clock()
    owners = [accounts[rng.randrange(SCALE)]["id"] for _ in range(1200)]
    ips = [f"10.{i % 40}.{i % 7}.{i % 250}" for i in range(1200)]
    docs = [
        session_doc(a, now - timedelta(seconds=40 * i), now, ip)
        for i, (a, ip) in enumerate(zip(owners, ips, strict=True))
    ]
    await db.sessions.insert_many(docs)
    events = [
        {"_id": ObjectId(), "type": "login_ok", "at": now - timedelta(seconds=i), "account_id": owners[i], "ip": ips[i]}
        for i in range(600)
    ]
    await db.events.insert_many([{**e, "expires_at": e["at"] + timedelta(days=90)} for e in events])
    return accounts


def plan_stages(plan: dict) -> list[str]:
    inner = [plan["inputStage"]] if "inputStage" in plan else plan.get("inputStages", [])
    return [plan.get("stage", "")] + [s for p in inner for s in plan_stages(p)]


async def explain_all(db, commands: list[dict]) -> list[str]:
    """Each recorded read explained: a failure message per read that is not an index
    range (an IXSCAN, no COLLSCAN) reading at most MOST keys and documents."""
    failures = []
    names = ("find", "filter", "sort", "projection", "limit", "aggregate", "pipeline", "cursor")
    for command in commands:
        explained = await db.command(
            {"explain": {k: v for k, v in command.items() if k in names}, "verbosity": "executionStats"}
        )
        if "stages" in explained:  # an aggregate (a count): its $match's plan
            explained = {**explained, **explained["stages"][0]["$cursor"]}
        plan, stats = explained["queryPlanner"]["winningPlan"], explained["executionStats"]
        stages = plan_stages(plan)
        read = max(stats["totalKeysExamined"], stats["totalDocsExamined"])
        if "COLLSCAN" in stages or not {"IXSCAN", "EXPRESS_IXSCAN", "IDHACK"} & set(stages) or read > MOST:
            failures.append(
                f"{command}\n  plan: {plan}\n  keys {stats['totalKeysExamined']}, docs {stats['totalDocsExamined']}"
            )
    return failures


async def test_every_search_is_a_bounded_index_range_at_100000_accounts(api, admin, gatehouse, finds, bulk):
    started = time.monotonic()
    accounts = await seed_scale(gatehouse, bulk)
    seeded = time.monotonic() - started
    target = accounts[777]
    suffix = target["phone"][-4:]
    queries = [
        target["username"][:4],  # a username prefix
        target["username"][0],  # one letter: read in slices until 1,000 are found
        "".join(chr(ord(c) + 0xFEE0) for c in target["username"].upper()),  # full width
        "山田",
        "дмитрий",
        "ΣΟΦΊΑ",
        "محمد",
        target["email"][:5],
        "@d17.example.org",
        "(415) " + target["phone"][5:8] + "-" + suffix,
        suffix,  # an id and the phones ending in it
        target["uid"][:6],
        "10.3.",
        "10.3.3.3",
        "nobody-at-all",
    ]
    searched = time.monotonic()
    for q in queries:
        for path in ("accounts", "sessions", "events"):
            r = await api.get(f"/admin/api/{path}?q={quote(q)}", token=admin["token"])
            assert r.status == 200, (q, r.data)
    for q in (target["username"], "(415) " + target["phone"][5:8] + "-" + suffix, suffix):
        found = (await api.get(f"/admin/api/accounts?q={quote(q)}", token=admin["token"])).data
        assert target["id"] in [a["id"] for a in found["accounts"]], q
    # Pages of all accounts (one id range each). The sessions lists' walks without a
    # search are bounded in test_scale_queries.py.
    for path in ("accounts?page=1500", "accounts?sort=created&order=desc", "accounts?page=2001"):
        assert (await api.get(f"/admin/api/{path}", token=admin["token"])).status == 200
    answered = time.monotonic() - searched
    failures = await explain_all(bulk, finds.commands)
    print(f"seeded {SCALE:,} accounts in {seeded:.1f} s; {len(finds.commands)} reads answered in {answered:.1f} s")
    assert not failures, "reads that are not bounded index ranges:\n" + "\n".join(failures)
