"""Instructions per request under callgrind: the steady measure for comparing code changes
on a noisy machine, where timings drift by ±30 % within a minute.

    bench/run --instructions          # ceiling, /auth/me opaque and JWT; ~3 minutes

Each server runs under `valgrind --tool=callgrind` with instrumentation off; after a
warm-up, it is switched on: first for a few idle seconds (the background work alone),
then for exactly `--requests` requests (four keep-alive connections, one request at a
time). Both columns divide by the count; the second first takes off the background's
rate times the requests' wall time. Under valgrind a request takes ~50× longer, and far
longer still when the machine is busy, so the first column moves with the machine's
load (the change feed looks four times a second, whatever happens); the second is the
request path alone and repeats within a few per cent.
"""

from __future__ import annotations

import http.client
import subprocess
import time
from pathlib import Path

from bench import Process


def drive(url: str, path: str, tokens: list[str], count: int) -> None:
    host, port = url.split("//")[1].split(":")
    connections = [http.client.HTTPConnection(host, int(port), timeout=120) for _ in range(4)]
    for i in range(count):
        conn = connections[i % 4]
        headers = {"Authorization": tokens[i % len(tokens)]} if tokens else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"{path} answered {response.status} under callgrind")
    for conn in connections:
        conn.close()


IDLE_SECONDS = 15.0


def dump(pid: int) -> None:
    """Write the counts since the last dump (callgrind starts each dump from zero)."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)


def totals(path: Path) -> int:
    lines = [line for line in path.read_text().splitlines() if line.startswith("totals:")]
    return int(lines[0].split()[1])


def count(
    name: str, args: list[str], env: dict[str, str], work: Path, ready: str, path: str, tokens: list[str], n: int
) -> tuple[float, float]:
    """(instructions per request, the same less the server's background work) of `path`
    on a server started (under callgrind) from args. The background (the session cache's
    change feed, the database clock, the delivery queue) runs on a wall-clock cadence, so
    its share per request grows whenever the machine is busy and valgrind slows down: it
    is measured alone first, for `IDLE_SECONDS`, and its rate times the requests' wall
    time is taken off. That remainder is steady on a noisy machine."""
    out = work / f"callgrind.{name}"
    prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    server = Process(name, args, env, work, ready, prefix=prefix, start_seconds=300)
    try:
        drive(server.url, path, tokens, 200)  # warm: caches filled, code paths taken
        subprocess.run(["callgrind_control", "-i", "on", str(server.proc.pid)], check=True, capture_output=True)
        idle_started = time.monotonic()
        time.sleep(IDLE_SECONDS)
        dump(server.proc.pid)
        idle_seconds = time.monotonic() - idle_started
        started = time.monotonic()
        drive(server.url, path, tokens, n)
        busy_seconds = time.monotonic() - started
        dump(server.proc.pid)
        time.sleep(1)
    finally:
        server.stop()
    idle, busy = (totals(p) for p in sorted(work.glob(f"callgrind.{name}.*"))[:2])  # .1 idle, .2 the requests
    background = idle / idle_seconds * busy_seconds
    return busy / n, (busy - background) / n


def table(env: dict[str, str], work: Path, files: dict[str, str], n: int) -> str:
    def tokens(kind: str) -> list[str]:
        return [t for t in Path(files[kind]).read_text().split("\n") if t]

    ceiling, ceiling_own = count("hello", ["bench/hello.py", "{port}"], {}, work, "/", "/", [], n)
    rows = [("ceiling: hello-world Tornado", ceiling, ceiling_own)]
    for name, kind in (("1. GET /auth/me, opaque token", "opaque"), ("2. GET /auth/me, JWT access token", "access")):
        measured = count(kind, ["server.py"], env, work, "/readyz", "/auth/me", tokens(kind), n)
        rows.append((name, *measured))
    lines = [
        "| scenario | M instructions / request | less background | ceiling ÷ this (less background) |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {value / 1e6:.3f} | {own / 1e6:.3f} | {ceiling_own / own:.2f} |" for name, value, own in rows
    ]
    return "\n".join(lines) + f"\n\n- {n:,} requests each, under callgrind\n"
