"""Gatehouse as a real process (or several) for the operations tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from devdb import free_port, terminate

ROOT = Path(__file__).resolve().parent.parent


def database_uri(base_uri: str, name: str) -> str:
    return base_uri.split("?")[0].rstrip("/") + "/" + name + "?directConnection=true"


class ServerProcess:
    """`python server.py` on a free loopback port, its output in a file."""

    def __init__(self, mongo_uri: str, *args: str, db_name: str | None = None, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_name = db_name or "gh_proc_" + uuid.uuid4().hex[:10]
        self.log = Path(tempfile.mkstemp(prefix="gatehouse-", suffix=".log")[1])
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "MONGODB_URI", "SECRET_KEY"))}
        self.env = {
            **clean,
            "PORT": str(self.port),
            "GATEHOUSE_BIND": "127.0.0.1",
            "MONGODB_URI": database_uri(mongo_uri, self.db_name),
            "SECRET_KEY": "proc-test-secret-" + "y" * 40,
            "GATEHOUSE_BCRYPT_ROUNDS": "4",
            "GATEHOUSE_DATA_DIR": tempfile.mkdtemp(prefix="gatehouse-data-"),
            **env,
        }
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self, ready_timeout: float = 60, wait: bool = True) -> ServerProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "server.py", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc is not None and self.proc.poll() is None, "server exited:\n" + self.output()
            assert time.monotonic() < deadline, "server not ready in time:\n" + self.output()
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 40) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def children(self) -> list[int]:
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()]

    def stop(self) -> None:
        terminate(self.proc, 30)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
