"""The development database: SecantusDB as a subprocess on a free loopback port, started
by `server.py` when MONGODB_URI is unset, and by the test suite and the benchmark. No
store or service depends on it: the domain only ever sees a MongoDB URI."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from config import Config

log = logging.getLogger("gatehouse")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secantusd_path() -> str | None:
    local = Path(sys.executable).with_name("secantusd-py")
    return str(local) if local.exists() else shutil.which("secantusd-py")


class EmbeddedMongo:
    """SecantusDB as a subprocess on a free loopback port: the zero-config development
    database, and the database of the test suite. Data lives under `storage`."""

    def __init__(
        self, storage: Path, port: int = 0, *, test_commands: bool = False, ttl_sweep_seconds: float | None = None
    ) -> None:
        self.storage = storage
        self.port = port  # 0: a free port, chosen at start (kept across a restart)
        # MongoDB's fault injection (configureFailPoint), for the test suite only.
        self.test_commands = test_commands
        # How often expired documents are deleted (default: every 60 s, as mongod). Its
        # sweep decodes every document of every collection with a TTL index while
        # holding the database's one lock (mongod walks the index instead): a few
        # seconds every minute at a million documents, so the scale benchmark, which
        # measures Gatehouse and not that, sweeps once an hour.
        self.ttl_sweep_seconds = ttl_sweep_seconds
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self, timeout: float = 60.0) -> str:
        exe = secantusd_path()
        if exe is None:
            raise RuntimeError(
                "MONGODB_URI is unset and SecantusDB is not installed; "
                "run `pip install -r requirements-dev.txt` or set MONGODB_URI"
            )
        self.storage.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        logfile = open(self.storage.parent / "secantusd.log", "ab")
        options = ["--enable-test-commands"] if self.test_commands else []
        if self.ttl_sweep_seconds is not None:
            config = self.storage.parent / "secantusd.toml"
            config.write_text(f"[storage]\nttl_sweep_seconds = {float(self.ttl_sweep_seconds)}\n")
            options += ["--config", str(config)]
        self.proc = subprocess.Popen(
            [exe, "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", str(self.storage), *options],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group: a Ctrl-C in the terminal reaches us, and we stop it
            # in order after draining requests.
            start_new_session=True,
        )
        logfile.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the embedded database exited with {self.proc.returncode}; see {self.storage.parent}/secantusd.log"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self.uri
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the embedded database did not start within 60 s")

    def stop(self) -> None:
        terminate(self.proc, 15)
        self.proc = None


def terminate(proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM, and SIGKILL when it has not exited within `timeout` seconds."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_database(config: Config) -> tuple[str, EmbeddedMongo | None]:
    """MONGODB_URI, or the embedded development database under GATEHOUSE_DATA_DIR."""
    if config.database.mongodb_uri:
        return config.database.mongodb_uri, None
    embedded = EmbeddedMongo(config.database.data_dir / "db")
    uri = embedded.start()
    log.info(
        "DEVELOPMENT DATABASE: embedded SecantusDB on 127.0.0.1:%d, data in %s (set MONGODB_URI for a real MongoDB)",
        embedded.port,
        embedded.storage,
    )
    return uri, embedded
