"""The scale scenario (issue 17): every console page and admin call at 200,000 accounts,
500,000 sessions and 1,000,000 events, and the hot path with and without a console tab.

    bench/run --scale                                   # full size
    bench/run --scale --accounts 20000 --sessions 50000 --events 100000
    bench/run --scale --docs                            # also rewrite the Scale section
    bench/run --scale --work DIR                        # keep the data in DIR; again: reuse it

It starts an embedded SecantusDB and one Gatehouse server on loopback, makes one account,
one login and its audit event through the API, and bulk-inserts copies of those very
documents (bench/seed.py: new ids, names, token hashes and times) in unordered batches.
Then it times each page sequentially, and runs wrk for whoami and login alone and while
a simulated console tab (a thread here, like static/console.js) fetches the sessions
rows every 3 seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from bench import PASSWORD, ROOT, Process, Result, machine, replace_block, server_env, write_lines, wrk

sys.path.insert(0, str(ROOT))  # bench.py does it too; said here, as seed needs it

import seed  # noqa: E402

from devdb import EmbeddedMongo  # noqa: E402

ADMIN = "scaleadmin"
SEEDED = "seeded.json"  # in the work directory: what was seeded, for `--work` to time it again
BUDGET_MS = 200
# The embedded database's TTL sweep decodes every document of every TTL-indexed
# collection under its one lock, every minute by default: seconds of stall for every
# request at this size, which mongod's index-walking TTL monitor does not have (devdb.py).
TTL_SWEEP_SECONDS = 3600
TAB_SECONDS = 3.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=200_000, help="accounts seeded (default 200,000)")
    parser.add_argument("--sessions", type=int, default=500_000, help="sessions seeded (default 500,000)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events seeded (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=5000, help="documents per insert_many (default 5000)")
    parser.add_argument("--requests", type=int, default=15, help="timed requests per page, after one warm-up")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=12, help="bcrypt cost (default 12, the server default)")
    parser.add_argument("--docs", action="store_true", help="rewrite the Scale section of docs/benchmarks.md")
    parser.add_argument(
        "--work",
        type=Path,
        help="keep the database here; when it holds a seeded run (seeded.json), time that data again without seeding",
    )
    return parser.parse_args()


def bulk(coll: Any, docs: Any, size: int) -> tuple[int, float]:
    """Insert `docs` in unordered batches of `size`: (how many, seconds)."""
    started, count = time.perf_counter(), 0
    for batch in seed.batches(docs, size):
        coll.insert_many(batch, ordered=False, bypass_document_validation=True)
        count += len(batch)
    return count, time.perf_counter() - started


def templates(http: httpx.Client, db: Any) -> tuple[dict, dict, dict]:
    """One account, its opaque session and its login event, made through the API."""
    name = "tpl" + uuid.uuid4().hex[:8]
    assert http.post("/auth/register", json={"username": name, "password": PASSWORD}).status_code == 200
    r = http.post("/auth/auth", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    account = db.accounts.find_one({"username": name})
    session = db.sessions.find_one({"account_id": account["id"], "kind": "opaque"})
    event = db.events.find_one({"account_id": account["id"], "type": "login_ok"})
    return account, session, event


def seed_bulk(http: httpx.Client, db: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The bulk data; returns the usernames, ids and the seeding figures."""
    account, session, event = templates(http, db)
    rng, now = random.Random(17), datetime.now(UTC)
    first = db.counters.find_one_and_update({"_id": "accounts"}, {"$inc": {"seq": args.accounts}})["seq"] + 1
    prefix = "sc" + uuid.uuid4().hex[:4]
    timings = {}
    ids = list(range(first, first + args.accounts))
    print(f"seeding {args.accounts:,} accounts ...", flush=True)
    timings["accounts"] = bulk(db.accounts, seed.accounts(account, first, args.accounts, prefix), args.batch)
    print(f"seeding {args.sessions:,} sessions ...", flush=True)
    owners = list(seed.session_owners(ids, args.sessions, rng))
    timings["sessions"] = bulk(db.sessions, seed.sessions(session, iter(owners), now, rng), args.batch)
    print(f"seeding {args.events:,} events ...", flush=True)
    timings["events"] = bulk(db.events, seed.events(event, ids, args.events, now, rng), args.batch)
    for name, (count, secs) in timings.items():
        print(f"  {name}: {count:,} in {secs:.1f} s ({count / secs:,.0f}/s)", flush=True)
    busy = max(set(owners[:2000]), key=owners[:2000].count)  # an account with several sessions
    return {"prefix": prefix, "ids": ids, "busy": busy, "timings": timings}


def seeded_before(work: Path) -> dict[str, Any] | None:
    """What an earlier run with this `--work` directory seeded (its database is there)."""
    try:
        seeded = json.loads((work / SEEDED).read_text())
    except FileNotFoundError:
        return None
    print(f"reusing the data seeded in {work}", flush=True)
    return {**seeded, "ids": range(*seeded["ids"]), "timings": {k: tuple(v) for k, v in seeded["timings"].items()}}


def seed_and_recount(
    http: httpx.Client, db: Any, args: argparse.Namespace, env: dict[str, str], work: Path
) -> dict[str, Any]:
    seeded = seed_bulk(http, db, args)
    seeded["recount"] = recount(env)
    kept = {**seeded, "ids": [seeded["ids"][0], seeded["ids"][-1] + 1]}
    (work / SEEDED).write_text(json.dumps(kept))
    return seeded


def recount(env: dict[str, str]) -> float:
    """`server.py recount`: the dashboard's counters set from the seeded data, as an
    operator would after a bulk import (models/stats.py). Its seconds."""
    print("recounting the dashboard's counters ...", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "server.py", "recount"], cwd=ROOT, env={**os.environ, **env}, check=True)
    return time.perf_counter() - started


def console_login(url: str) -> httpx.Client:
    """A browser's console session: the login form with its XSRF cookie."""
    client = httpx.Client(base_url=url, timeout=60, headers={"Sec-Fetch-Site": "same-origin"})
    client.get("/console/login")
    xsrf = client.cookies.get("gh_xsrf")
    r = client.post("/console/login", data={"username": ADMIN, "password": PASSWORD, "_xsrf": xsrf})
    assert r.status_code == 303, f"console login answered {r.status_code}"
    return client


@dataclass
class Timing:
    name: str
    times_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # status codes, "timeout"

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    @property
    def p90(self) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] if ordered else float("nan")


def timed(client: httpx.Client, name: str, path: str, count: int) -> tuple[Timing, httpx.Response | None]:
    """One warm-up, then `count` sequential requests (3 when the warm-up took over 3 s:
    today's slowest pages would otherwise take minutes). A 503 or a timeout is a failure."""
    timing, last = Timing(name), None
    started = time.perf_counter()
    try:
        last = client.get(path)
    except httpx.TimeoutException:
        pass
    runs = count if time.perf_counter() - started < 3 else 3
    for _ in range(runs):
        started = time.perf_counter()
        try:
            r = client.get(path)
        except httpx.TimeoutException:
            timing.failures.append("timeout")
            continue
        timing.times_ms.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            timing.failures.append(str(r.status_code))
        last = r
    return timing, last


def next_cursor(response: httpx.Response | None) -> str:
    try:
        return (response.json() if response is not None else {}).get("next") or ""
    except ValueError:
        return ""


def pages(console: httpx.Client, api: httpx.Client, seeded: dict, args: argparse.Namespace) -> list[Timing]:
    """Every console page and admin call, in turn."""
    busy, n = seeded["busy"], args.requests
    user = f"{seeded['prefix']}{busy - seeded['ids'][0]}"
    search = f"{seeded['prefix']}{len(seeded['ids']) // 2}"[:-2]
    later = max(2, args.accounts // 100)
    console_pages = [
        ("console dashboard", "/console/"),
        ("console sessions", "/console/sessions"),
        ("console sessions account=", f"/console/sessions?account={user}"),
        ("console sessions kind=jwt", "/console/sessions?kind=jwt"),
        ("console sessions active=1", "/console/sessions?active=1"),
        ("console sessions rows (3 s refresh)", "/console/sessions/rows"),
        ("console accounts, prefix search", f"/console/accounts?q={search}"),
        ("console account", f"/console/accounts/{busy}"),
        ("console events", "/console/events"),
        ("console events type=login_failed", "/console/events?type=login_failed"),
        ("console events account=", f"/console/events?account={user}"),
    ]
    api_calls = [
        ("admin API sessions", "/admin/api/sessions"),
        ("admin API sessions active=true", "/admin/api/sessions?active=true"),
        ("admin API sessions kind=jwt", "/admin/api/sessions?kind=jwt"),
        ("admin API sessions account=", f"/admin/api/sessions?account={user}"),
        ("admin API accounts search", f"/admin/api/accounts?q={search}"),
        ("admin API account", f"/admin/api/accounts/{busy}"),
        ("admin API events", "/admin/api/events"),
        ("admin API events type=login_failed", "/admin/api/events?type=login_failed"),
        ("admin API stats", "/admin/api/stats"),
        ("drf users/ page 1", "/api/auth/users/"),
        (f"drf users/ page {later}", f"/api/auth/users/?page={later}"),
        ("/metrics", "/metrics"),
    ]
    results = [timed(console, name, path, n)[0] for name, path in console_pages]
    for name, path in api_calls:
        timing, last = timed(api, name, path, n)
        results.append(timing)
        if name == "admin API sessions":
            cursor = next_cursor(last)
            second = "admin API sessions page 2 (cursor)"
            if cursor:
                results.append(timed(api, second, f"{path}?cursor={cursor}", n)[0])
            else:  # page 1 failed: there is no page 2 to ask for
                results.append(Timing(second, failures=["no cursor from page 1"]))
    return results


class ConsoleTab(threading.Thread):
    """An open console sessions tab: like static/console.js, a fetch of the rows every
    3 s, skipped while the last one is still out."""

    def __init__(self, client: httpx.Client) -> None:
        super().__init__(daemon=True)
        self.client, self.stopping = client, threading.Event()
        self.timing = Timing("console tab refreshes")

    def run(self) -> None:
        while not self.stopping.wait(TAB_SECONDS - time.monotonic() % TAB_SECONDS):
            started = time.perf_counter()
            try:
                r = self.client.get("/console/sessions/rows", headers={"X-Gatehouse-Refresh": "1"})
                self.timing.times_ms.append((time.perf_counter() - started) * 1000)
                if r.status_code != 200:
                    self.timing.failures.append(str(r.status_code))
            except httpx.TimeoutException:
                self.timing.failures.append("timeout")

    def stop(self) -> Timing:
        self.stopping.set()
        self.join()
        return self.timing


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def settle(pid: int, limit: float = 300) -> float:
    """Wait until the database process is nearly idle (under 0.2 CPU-seconds a second,
    twice running): a page that gave up at the driver's timeout leaves its query running
    in the database (issue 17), which would otherwise weigh on the hot path measured
    "alone" (a quick point read is no sign: it is answered beside them). Seconds waited."""
    started, quiet, last = time.monotonic(), 0, cpu_seconds(pid)
    while quiet < 2 and time.monotonic() - started < limit:
        time.sleep(1)
        now = cpu_seconds(pid)
        quiet, last = (quiet + 1 if now - last < 0.2 else 0), now
    return time.monotonic() - started


def hot_path(url: str, console: httpx.Client, files: dict, d: float) -> tuple[list[tuple[Result, Result]], Timing]:
    """(alone, with a console tab) for whoami and login, and the tab's own refreshes."""
    me = ["/auth/me", files["opaque"]]
    slow = max(2 * d, 15)  # logins are a few a second: long enough to count
    wrk("warm-up", url, "get.lua", me, 16, 2)
    alone = [wrk("whoami, opaque", url, "get.lua", me, 16, d)]
    alone.append(wrk("login", url, "login.lua", [files["users"], PASSWORD], 8, slow))
    tab = ConsoleTab(console)
    tab.start()
    time.sleep(TAB_SECONDS)  # the tab's first refresh is out before wrk starts
    beside = [wrk("whoami, opaque, console tab open", url, "get.lua", me, 16, d)]
    beside.append(wrk("login, console tab open", url, "login.lua", [files["users"], PASSWORD], 8, slow))
    return list(zip(alone, beside, strict=True)), tab.stop()


def real_sessions(http: httpx.Client, users: list[str], count: int) -> dict[str, list[str]]:
    """Opaque tokens of real logins through the API (whoami's tokens), and the admin's."""
    tokens = []
    for user in users[:count]:
        for _ in range(3):  # a database still busy with the seed may answer 503 once
            r = http.post("/auth/auth", json={"username": user, "password": PASSWORD})
            if r.status_code != 503:
                break
            time.sleep(5)
        assert r.status_code == 200, r.text
        tokens.append(r.json()["data"]["token"])
    r = http.post("/auth/auth", json={"username": ADMIN, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"opaque": tokens, "admin": ["Bearer " + r.json()["data"]["token"]]}


def render(args: argparse.Namespace, seeded: dict, timings: list[Timing], hot: list, tab: Timing) -> str:
    size = f"{args.accounts:,} accounts, {args.sessions:,} sessions, {args.events:,} events"
    lines = [f"Seeded: {size}."]
    for name, (count, secs) in seeded["timings"].items():
        lines.append(f"- {name}: {count:,} in {secs:.1f} s ({count / secs:,.0f} documents/s)")
    lines.append(f"- then `server.py recount` (the dashboard's counters from the data): {seeded['recount']:.1f} s")
    lines += ["", f"| request | n | median ms | p90 ms | ≤ {BUDGET_MS} ms? | failures |"]
    lines.append("|---|---:|---:|---:|---|---|")
    for t in timings:
        ok = "yes" if t.times_ms and t.median <= BUDGET_MS and not t.failures else "**no**"
        failed = ", ".join(t.failures)
        lines.append(f"| {t.name} | {len(t.times_ms)} | {t.median:,.0f} | {t.p90:,.0f} | {ok} | {failed} |")
    lines += [
        "",
        "| hot path | req/s alone | req/s tab open | ratio (≥ 0.9) | p99 ms alone | p99 ms tab open "
        "| p99 ratio (≤ 2) | errors (alone / tab) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for alone, beside in hot:
        lines.append(
            f"| {alone.name} | {alone.rps:,.0f} | {beside.rps:,.0f} | {beside.rps / alone.rps:.2f} "
            f"| {alone.p99_ms:.1f} | {beside.p99_ms:.1f} | {beside.p99_ms / alone.p99_ms:.2f} "
            f"| {alone.errors} / {beside.errors} |"
        )
    tab_failed = f", {len(tab.failures)} failed"
    tab_failed += f" ({', '.join(tab.failures)})" if tab.failures else ""
    lines += ["", f"- console tab: {len(tab.times_ms)} refreshes, median {tab.median:,.0f} ms{tab_failed}"]
    lines.append(f"- the database's CPU settled for {seeded['settle']:.0f} s after the pages, before the hot path")
    lines.append(f"- machine: {machine()}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, work: Path, database: EmbeddedMongo, env: dict[str, str]) -> str:
    db = MongoClient(database.uri, tz_aware=True).gatehouse_bench
    server = Process("gatehouse-scale", ["server.py"], env, work, "/readyz")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            seeded = seeded_before(work) or seed_and_recount(http, db, args, env, work)
            assert database.proc is not None
            print(f"database settled after {settle(database.proc.pid):.0f} s", flush=True)
            users = [f"{seeded['prefix']}{i}" for i in random.Random(1).sample(range(args.accounts), 1000)]
            tokens = real_sessions(http, users, 64)
        files = {"opaque": write_lines(work / "opaque.txt", tokens["opaque"])}
        files["users"] = write_lines(work / "users.txt", users)
        console = console_login(server.url)
        headers = {"Authorization": tokens["admin"][0]}
        with httpx.Client(base_url=server.url, timeout=60, headers=headers) as api:
            print("timing pages ...", flush=True)
            timings = pages(console, api, seeded, args)
        assert database.proc is not None
        seeded["settle"] = settle(database.proc.pid)
        print(f"hot path alone and with a console tab (after {seeded['settle']:.0f} s of settling) ...", flush=True)
        hot, tab = hot_path(server.url, console, files, args.duration)
    finally:
        server.stop()
    return render(args, seeded, timings, hot, tab)


def main() -> int:
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="gatehouse-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    database = EmbeddedMongo(work / "db", ttl_sweep_seconds=TTL_SWEEP_SECONDS)
    uri = database.start()
    env = server_env(uri, work, args.rounds)
    env.update(GATEHOUSE_ADMIN_USERNAME=ADMIN, GATEHOUSE_ADMIN_PASSWORD=PASSWORD)
    try:
        table = run(args, work, database, env)
    finally:
        database.stop()
    print(table)
    if args.docs:
        command = f"bench/run --scale --accounts {args.accounts} --sessions {args.sessions} --events {args.events}"
        block = f"`{command}` on {time.strftime('%Y-%m-%d')}:\n\n{table}"
        replace_block(ROOT / "docs" / "benchmarks.md", "<!-- scale -->", "<!-- /scale -->", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
