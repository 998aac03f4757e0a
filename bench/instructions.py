"""Instructions per request under callgrind: the steady measure for comparing code changes
on a noisy machine, where timings drift by ±30 % within a minute.

    bench/run --instructions          # ceiling, /auth/me opaque and JWT; ~3 minutes

Each server runs under `valgrind --tool=callgrind` with instrumentation off; after a
warm-up, it is switched on for exactly `--requests` requests (four keep-alive
connections, one request at a time), dumped, and the total divided by the count. Under
valgrind a request takes ~50× longer, so the session cache's change feed (four looks a
second) weighs more per request than at full speed: figures repeat within a few per cent.
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


def count(
    name: str, args: list[str], env: dict[str, str], work: Path, ready: str, path: str, tokens: list[str], n: int
) -> float:
    """Instructions per request of `path` on a server started (under callgrind) from args."""
    out = work / f"callgrind.{name}"
    prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    server = Process(name, args, env, work, ready, prefix=prefix, start_seconds=300)
    try:
        drive(server.url, path, tokens, 200)  # warm: caches filled, code paths taken
        subprocess.run(["callgrind_control", "-i", "on", str(server.proc.pid)], check=True, capture_output=True)
        drive(server.url, path, tokens, n)
        subprocess.run(["callgrind_control", "-d", str(server.proc.pid)], check=True, capture_output=True)
        time.sleep(1)
    finally:
        server.stop()
    dumps = sorted(work.glob(f"callgrind.{name}.*"))  # .1: the dump asked for above
    totals = [line for line in dumps[0].read_text().splitlines() if line.startswith("totals:")]
    return int(totals[0].split()[1]) / n


def table(env: dict[str, str], work: Path, files: dict[str, str], n: int) -> str:
    def tokens(kind: str) -> list[str]:
        return [t for t in Path(files[kind]).read_text().split("\n") if t]

    ceiling = count("hello", ["bench/hello.py", "{port}"], {}, work, "/", "/", [], n)
    rows = [
        ("ceiling: hello-world Tornado", ceiling),
        (
            "1. GET /auth/me, opaque token",
            count("opaque", ["server.py"], env, work, "/readyz", "/auth/me", tokens("opaque"), n),
        ),
        (
            "2. GET /auth/me, JWT access token",
            count("jwt", ["server.py"], env, work, "/readyz", "/auth/me", tokens("access"), n),
        ),
    ]
    lines = ["| scenario | M instructions / request | ceiling ÷ this |", "|---|---:|---:|"]
    lines += [f"| {name} | {value / 1e6:.3f} | {ceiling / value:.2f} |" for name, value in rows]
    return "\n".join(lines) + f"\n\n- {n:,} requests each, under callgrind\n"
