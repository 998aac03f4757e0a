"""Gatehouse benchmark: every scenario against a hello-world Tornado ceiling measured in
the same run, on this machine, over loopback, with wrk as the load generator.

    bench/run                  # all scenarios, ~3 minutes
    bench/run --duration 4     # shorter
    bench/run --docs           # also rewrite docs/benchmarks.md
    bench/run --instructions   # instructions per request under callgrind (steady)

It starts what it needs (an embedded SecantusDB in a temporary directory, the ceiling
app, Gatehouse with one and with two processes), seeds accounts and sessions, runs the
scenarios, prints a table and stops everything. Every run is bounded by --duration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bcrypt  # noqa: E402
import httpx  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from devdb import EmbeddedMongo, free_port  # noqa: E402
from models.common import sha256_hex  # noqa: E402
from models.passwords import _prehash  # noqa: E402
from models.sessions import new_token  # noqa: E402

PASSWORD = "Bench-password-42"
LUA = ROOT / "bench" / "lua"


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    note: str = ""
    ratio: float | None = None  # to a ceiling measured beside it (see `paired`)


class Process:
    """A server subprocess on a free loopback port, with its log in the work directory."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        work: Path,
        ready_path: str,
        prefix: list[str] | None = None,
        start_seconds: float = 60,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(work / f"{name}.log", "wb")
        full_env = {**os.environ, **env, "PORT": str(self.port)}
        cmd = [*(prefix or []), sys.executable, *[a.replace("{port}", str(self.port)) for a in args]]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                if httpx.get(self.url + ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start; see {self.log.name}")
            time.sleep(0.2)

    def rss_mib(self) -> float:
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wrk(name: str, url: str, script: str, args: list[str], connections: int, duration: float, note: str = "") -> Result:
    threads = min(2, connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--timeout", "10s"]
    cmd += ["-s", str(LUA / script), url, "--", *args]
    out = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "BENCH_LUA": str(LUA)}, timeout=duration + 60
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk failed for {name}: {out.stdout}\n{out.stderr}")
    r = json.loads(line[len("RESULT ") :])
    return Result(
        name,
        r["requests"] / (r["duration_us"] / 1e6),
        r["p50_us"] / 1000,
        r["p99_us"] / 1000,
        r["socket_errors"] + r["status_errors"],
        note,
    )


def paired(name: str, hello: str, url: str, script: str, args: list[str], connections: int, d: float) -> Result:
    """A throughput scenario against the ceiling, in alternating rounds: these machines
    drift by ±30 % within a minute, so each round's ratio is taken to a ceiling run
    measured just before it, and the median round is reported. A short warm-up (not
    counted) fills the caches first."""
    wrk("warm-up", url, script, args, connections, 2)
    rounds = []
    for _ in range(3):
        ceiling = wrk("ceiling", hello, "get.lua", ["/"], connections, d / 2)
        rounds.append((wrk(name, url, script, args, connections, d / 2), ceiling))
    rounds.sort(key=lambda pair: pair[0].rps / pair[1].rps)
    middle, ceiling = rounds[1]
    middle.ratio = middle.rps / ceiling.rps
    middle.errors = sum(r.errors for r, _ in rounds)
    middle.note = f"median of 3 rounds: {', '.join(f'{r.rps / c.rps:.2f}' for r, c in rounds)}"
    return middle


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def seed(url: str, db, accounts: int, sessions: int) -> dict[str, list[str]]:
    """`accounts` accounts sharing one real bcrypt hash at the configured cost (hashing
    each would take minutes), then `sessions` real logins of each kind through the API."""
    template = "seed" + uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        r = await http.post("/auth/register", json={"username": template, "password": PASSWORD})
        assert r.status_code == 200, r.text
        doc = db.accounts.find_one({"username": template})
        first = db.counters.find_one_and_update({"_id": "accounts"}, {"$inc": {"seq": accounts}})["seq"] + 1
        clones = []
        for i in range(accounts):
            name = f"{template}n{i}"
            clone = {k: v for k, v in doc.items() if k != "_id"}
            clone.update(id=first + i, uid=str(uuid.uuid4()), username=name, username_key=name.lower())
            clones.append(clone)
        db.accounts.insert_many(clones)
        users = [c["username"] for c in clones]

        gate = asyncio.Semaphore(8)

        async def post(path: str, user: str) -> dict:
            async with gate:
                r = await http.post(path, json={"username": user, "password": PASSWORD})
                assert r.status_code == 200, r.text
                return r.json()["data"]

        opaque = await asyncio.gather(*[post("/auth/auth", users[i]) for i in range(sessions)])
        pairs = await asyncio.gather(*[post("/auth/token", users[-1 - i]) for i in range(sessions)])
    return {
        "users": users,
        "opaque": [o["token"] for o in opaque],
        "access": ["Bearer " + p["access_token"] for p in pairs],
        "refresh": [p["refresh_token"] for p in pairs],
    }


def bcrypt_limit(rounds: int) -> tuple[float, float]:
    """(seconds per check at this cost, checks per second with every core busy)."""
    hashed = bcrypt.hashpw(_prehash(PASSWORD), bcrypt.gensalt(rounds))
    times = []
    for _ in range(5):
        started = time.perf_counter()
        bcrypt.checkpw(_prehash(PASSWORD), hashed)
        times.append(time.perf_counter() - started)
    one = statistics.median(times)
    return one, (os.cpu_count() or 1) / one


def writes(db) -> int:
    counters = db.client.admin.command("serverStatus")["opcounters"]
    return counters["insert"] + counters["update"] + counters["delete"]


def clone_sessions(db, count: int) -> list[str]:
    """Live sessions for the memory figure: copies of a real one with new ids and tokens
    of their own; returns the tokens, so the cache can be filled with real entries."""
    template = db.sessions.find_one({"kind": "opaque", "revoked_at": None})
    tokens, batch = [], []
    for _ in range(count):
        token = new_token()
        tokens.append(token)
        clone = dict(template, _id=uuid.uuid4().hex, token_hash=sha256_hex(token), last_active=datetime.now(UTC))
        batch.append(clone)
        if len(batch) == 5000:
            db.sessions.insert_many(batch, ordered=False)
            batch = []
    if batch:
        db.sessions.insert_many(batch, ordered=False)
    return tokens


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    system = f"Linux {platform.release()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {system}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8, help="seconds per scenario (default 8)")
    parser.add_argument("--rounds", type=int, default=12, help="bcrypt cost (default 12, the server default)")
    parser.add_argument("--sessions", type=int, default=64, help="seeded sessions of each kind")
    parser.add_argument("--memory-sessions", type=int, default=100_000, help="live sessions for the memory figure")
    parser.add_argument("--docs", action="store_true", help="rewrite docs/benchmarks.md with this run")
    parser.add_argument(
        "--instructions", action="store_true", help="instructions per request under callgrind instead (steady)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests counted with --instructions")
    return parser.parse_args()


def server_env(uri: str, work: Path, rounds: int) -> dict[str, str]:
    return {
        "MONGODB_URI": uri.replace("/?", "/gatehouse_bench?"),
        "SECRET_KEY": "bench-secret-" + "z" * 40,
        "GATEHOUSE_BCRYPT_ROUNDS": str(rounds),
        "GATEHOUSE_LOGIN_FAILURES_PER_IP": "1000000",
        # Every request of the bench comes from one loopback address: the per-IP budgets
        # for successful logins and sign-ups would cap the throughput being measured.
        "GATEHOUSE_LOGINS_PER_IP_HOUR": "10000000",
        "GATEHOUSE_SIGNUPS_PER_IP_HOUR": "10000000",
        "GATEHOUSE_DATA_DIR": str(work),
        "GATEHOUSE_BIND": "127.0.0.1",
    }


class Bench:
    """One run of the throughput scenarios against servers it starts (and stops)."""

    def __init__(self, args: argparse.Namespace, work: Path, env: dict[str, str], db: Any) -> None:
        self.args, self.work, self.env, self.db = args, work, env, db
        self.d = args.duration
        self.started: list[Process] = []
        self.results: list[Result] = []
        self.facts: dict[str, str] = {}

    def start(self, process: Process) -> Process:
        self.started.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        self.started.remove(process)

    def whoami(self, hello: Process, one: Process, seeded: dict, files: dict) -> Result:
        d, db = self.d, self.db
        ceiling = wrk("ceiling: hello-world Tornado", hello.url, "get.lua", ["/"], 32, d)
        self.results.append(ceiling)
        # Every seeded session's lastActive is made old enough to be due: the count below
        # then shows the throttle (one write per session per minute), not a quiet start.
        db.sessions.update_many({}, {"$set": {"last_active": datetime.now(UTC) - timedelta(minutes=5)}})
        before = writes(db)
        opaque_me, jwt_me = ["/auth/me", files["opaque"]], ["/auth/me", files["access"]]
        s1 = paired("1. GET /auth/me, opaque token", hello.url, one.url, "get.lua", opaque_me, 32, d)
        s1.note += f"; {writes(db) - before} database writes for {len(seeded['opaque'])} sessions"
        self.results.append(s1)
        s2 = paired("2. GET /auth/me, JWT access token", hello.url, one.url, "get.lua", jwt_me, 32, d)
        self.results.append(s2)
        return ceiling

    def logins(self, one: Process, files: dict) -> None:
        d, rounds = self.d, self.args.rounds
        one_hash, limit = bcrypt_limit(rounds)
        # A few logins per second: run long enough that the count is not just the first
        # round of eight requests.
        slow = max(2 * d, 15)
        s3 = wrk("3. login POST /auth/auth", one.url, "login.lua", [files["users"], PASSWORD], 8, slow)
        s3.note = f"{s3.rps / limit:.2f}x the bcrypt limit of {limit:.1f}/s"
        s3.note += f" ({os.cpu_count()} cores / {one_hash * 1000:.0f} ms at cost {rounds})"
        self.results.append(s3)
        prefix = "b" + uuid.uuid4().hex[:5]
        s4 = wrk("4. sign-up POST /auth/register", one.url, "signup.lua", [prefix, PASSWORD], 8, slow)
        s4.note = "one bcrypt hash per sign-up, like a login"
        self.results.append(s4)
        self.results.append(wrk("5. JWT refresh (rotating)", one.url, "refresh.lua", [files["refresh"], "2"], 16, d))

    def storm(self, one: Process, files: dict) -> None:
        d, opaque_me = self.d, ["/auth/me", files["opaque"]]
        wrk("warm-up", one.url, "get.lua", opaque_me, 4, 2)  # the same warm cache as 6b will have
        idle = wrk("6a. whoami, idle (4 connections)", one.url, "get.lua", opaque_me, 4, d)
        self.results.append(idle)
        storm = subprocess.Popen(
            ["wrk", "-t", "2", "-c", "16", "-d", f"{max(1, round(d)) + 2}s", "-s", str(LUA / "login.lua")]
            + [one.url, "--", files["users"], PASSWORD],
            env={**os.environ, "BENCH_LUA": str(LUA)},
            stdout=subprocess.DEVNULL,
        )
        time.sleep(1)
        during = wrk("6b. whoami during a login storm", one.url, "get.lua", opaque_me, 4, d)
        storm.wait()
        during.note = f"p99 {during.p99_ms / idle.p99_ms:.2f}x idle"
        self.results.append(during)

    def two_processes(self, hello: Process, files: dict) -> None:
        # How far two processes can go on this machine at all, beside wrk and the
        # database: the ceiling app with two processes against itself with one.
        d, work = self.d, self.work
        s1 = next(r for r in self.results if r.name.startswith("1."))
        hello2 = self.start(Process("hello-2", ["bench/hello.py", "{port}", "2"], {}, work, "/"))
        c2 = paired("ceiling with 2 processes", hello.url, hello2.url, "get.lua", ["/"], 32, d)
        c2.note = f"the machine's own limit for scenario 7 ({c2.note})"
        self.results.append(c2)
        self.stop(hello2)
        two = self.start(Process("gatehouse-2", ["server.py", "--processes", "2"], self.env, work, "/readyz"))
        opaque_me = ["/auth/me", files["opaque"]]
        s7 = paired("7. scenario 1 with --processes 2", hello.url, two.url, "get.lua", opaque_me, 32, d)
        s7.note = f"{s7.ratio / s1.ratio:.2f}x one process; the ceiling: {c2.ratio:.2f}x ({s7.note})"
        self.results.append(s7)
        self.stop(two)

    def memory(self, one: Process) -> None:
        print(f"adding {self.args.memory_sessions:,} live sessions for the memory figure ...", flush=True)
        tokens = clone_sessions(self.db, self.args.memory_sessions)
        # More distinct tokens than the cache holds, each used: the cache ends up full.
        size = 10_000  # GATEHOUSE_SESSION_CACHE_SIZE's default
        fill = write_lines(self.work / "fill.txt", tokens[: size + size // 10])
        wrk("memory: fill the cache", one.url, "get.lua", ["/auth/me", fill], 16, 20)
        self.facts["rss"] = (
            f"{one.rss_mib():.0f} MiB resident for one process with "
            f"{self.db.sessions.estimated_document_count():,} sessions in the database and its session cache full "
            f"({size:,} entries, after {size + size // 10:,} distinct tokens)"
        )


def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    database = EmbeddedMongo(work / "db")
    uri = database.start()
    db = MongoClient(uri).gatehouse_bench
    env = server_env(uri, work, args.rounds)
    bench = Bench(args, work, env, db)
    try:
        hello = bench.start(Process("hello", ["bench/hello.py", "{port}"], {}, work, "/"))
        one = bench.start(Process("gatehouse-1", ["server.py"], env, work, "/readyz"))
        print("seeding accounts and sessions ...", flush=True)
        seeded = asyncio.run(seed(one.url, db, 10_000, args.sessions))
        files = {k: write_lines(work / f"{k}.txt", v) for k, v in seeded.items()}
        if args.instructions:
            import instructions

            bench.stop(one)
            print(instructions.table(env, work, files, args.requests))
            return 0
        ceiling = bench.whoami(hello, one, seeded, files)
        bench.logins(one, files)
        bench.storm(one, files)
        bench.two_processes(hello, files)
        bench.memory(one)
    finally:
        for p in bench.started:
            p.stop()
        database.stop()

    table = render(bench.results, ceiling, bench.facts)
    print(table)
    if args.docs:
        write_docs(table, args)
    return 0


def render(results: list[Result], ceiling: Result, facts: dict[str, str]) -> str:
    rows = ["| scenario | req/s | × ceiling | p50 ms | p99 ms | errors | note |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        rows.append(
            f"| {r.name} | {r.rps:,.0f} | {r.ratio or r.rps / ceiling.rps:.2f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
            f"| {r.errors} "
            f"| {r.note} |"
        )
    return "\n".join(rows) + "\n\n" + "\n".join(f"- {v}" for v in facts.values()) + f"\n- machine: {machine()}\n"


def replace_block(path: Path, start: str, end: str, body: str) -> None:
    """Put `body` between the markers `start` and `end` in the file (appended with them
    when they are not there yet)."""
    text = path.read_text() if path.exists() else ""
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


def write_docs(table: str, args: argparse.Namespace) -> None:
    body = f"`bench/run --duration {args.duration:g}` on {time.strftime('%Y-%m-%d')}:\n\n{table}"
    replace_block(ROOT / "docs" / "benchmarks.md", "<!-- results -->", "<!-- /results -->", body)


if __name__ == "__main__":
    sys.exit(main())
