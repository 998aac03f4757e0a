"""Password hashing and policy.

bcrypt reads at most 72 bytes, and bcrypt 5 raises ValueError beyond that. We hash a
fixed-length pre-hash instead: base64(HMAC-SHA-256(label, NFKC(password))), 44 bytes,
so every character of a 256-character password counts. The HMAC key is a constant
label rather than SECRET_KEY on purpose: rotating SECRET_KEY must not lock every user
out, and the label still keeps our hashes from being "shucked" with generic SHA-256
leak lists.

bcrypt runs on a dedicated thread pool (pyca/bcrypt releases the GIL), never on the
IOLoop, so requests keep being served while hashes run.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt

from .errors import WeakPassword
from .validation import normalize_password_text

PREHASH_LABEL = b"gatehouse/password/v1"
MIN_LENGTH = 8
MAX_LENGTH = 256
_BLOCKLIST_PATH = Path(__file__).with_name("common_passwords.txt")


def _prehash(password: str) -> bytes:
    digest = hmac.new(PREHASH_LABEL, normalize_password_text(password).encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest)


def _lower_priority() -> None:
    """Run bcrypt at a lower CPU priority (nice +10; on Linux niceness is per thread):
    hashes use every idle core, but the IOLoop and the database get the CPU first when
    they need it, so a login storm does not slow every other request down."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: hashes simply run at normal priority


def _load_blocklist() -> frozenset[str]:
    try:
        return frozenset(
            line.strip().lower()
            for line in _BLOCKLIST_PATH.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
    except OSError:
        return frozenset()


class PasswordHasher:
    """bcrypt on a bounded thread pool, plus the password policy."""

    def __init__(self, rounds: int, threads: int) -> None:
        self.rounds = rounds
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bcrypt", initializer=_lower_priority)
        self.blocklist = _load_blocklist()
        # A real hash to check unknown users against, so "no such user" costs the same
        # time as "wrong password" (no enumeration by timing).
        self._dummy = bcrypt.hashpw(_prehash("gatehouse-dummy-password"), bcrypt.gensalt(rounds))

    def check_policy(self, password: str, *context: str | None) -> None:
        """Length 8-256 characters, not a common password, not the username/e-mail; no
        composition rules (NIST SP 800-63B)."""
        text = normalize_password_text(password)
        if len(text) < MIN_LENGTH:
            raise WeakPassword(f"password must be at least {MIN_LENGTH} characters", field="password")
        if len(text) > MAX_LENGTH:
            raise WeakPassword(f"password must be at most {MAX_LENGTH} characters", field="password")
        lowered = text.lower()
        if lowered in self.blocklist or lowered in ("gatehouse", "gatehouse1", "gatehouse123"):
            raise WeakPassword("this password is too common; choose a longer or less predictable one", field="password")
        for value in context:
            if value and lowered == value.lower():
                raise WeakPassword("password must not be your username, e-mail or phone number", field="password")

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        salt = bcrypt.gensalt(self.rounds)
        hashed = await loop.run_in_executor(self.pool, bcrypt.hashpw, _prehash(password), salt)
        return hashed.decode("ascii")

    async def verify(self, password: str | None, hashed: str | None) -> bool:
        """Constant-work check: with no hash (unknown user) we still pay for one bcrypt."""
        loop = asyncio.get_running_loop()
        candidate = _prehash(password or "")
        target = hashed.encode("ascii") if hashed else self._dummy
        try:
            ok = await loop.run_in_executor(self.pool, bcrypt.checkpw, candidate, target)
        except ValueError:
            return False
        return bool(ok and hashed and password is not None)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
