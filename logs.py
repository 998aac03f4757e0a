"""Gatehouse's log output: one line per record on stdout, as text or JSON
(GATEHOUSE_LOG_FORMAT), written in batches so logging stays a small share of a request.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """The usual layout, with the timestamp's date and time formatted once a second: an
    access line per request made strftime a visible share of a request's cost."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second, self._stamp = -1, ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self._stamp},{int(record.msecs):03d}"


class BatchingHandler(logging.StreamHandler):
    """Log lines written in batches, not one write(2) per request, which was a visible
    share of a request's cost. A batch is whole lines of at most PIPE_BUF bytes, so
    workers sharing one stdout pipe never interleave inside a line. Lines wait at most
    `FLUSH_SECONDS` (the server's loop also flushes on that cadence); warnings and
    errors go out at once, and everything at exit."""

    FLUSH_SECONDS = 0.25
    BATCH_BYTES = 4096  # PIPE_BUF on Linux: a write this size to a pipe is atomic

    def __init__(self, stream: object) -> None:
        super().__init__(stream)  # type: ignore[arg-type]
        self.pending: list[str] = []
        self.size = 0
        self.flushed = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging must never take the request down
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]
            self.pending.append(line)
            self.size += len(line)
        if (
            record.levelno >= logging.WARNING
            or self.size >= self.BATCH_BYTES
            or time.monotonic() - self.flushed >= self.FLUSH_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self.pending, self.size = self.pending, [], 0
            self.flushed = time.monotonic()
            batch: list[str] = []
            size = 0
            for line in lines:
                if batch and size + len(line) > self.BATCH_BYTES:
                    self._write(batch)
                    batch, size = [], 0
                batch.append(line)
                size += len(line)
            if batch:
                self._write(batch)

    def _write(self, lines: list[str]) -> None:
        self.stream.write("".join(lines))
        self.stream.flush()


def flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def configure_logging(fmt: str = "text") -> None:
    # What records would carry and no formatter of ours prints: not collected (the
    # logging HOWTO's "Optimization" section).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # no caller's file and line: that walks the stack per record
    handler = BatchingHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("tornado.access", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
