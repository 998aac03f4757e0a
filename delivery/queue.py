"""The delivery queue: outbound messages are jobs in MongoDB, sent by a worker in any process.

Why a queue: how long a reset or code request takes must not reveal whether the account
exists, so the request path only writes a job and answers; SMTP and the SMS provider are
waited on here, off that path. The job is written before the answer, so an accepted
request is never lost to a crash or a restart.

How a job moves (one document in `jobs`):

    pending --claim--> sending --sent--> done
       ^                  |  \\--failed, tries left--> pending (next_at = now + backoff)
       |                  |   \\-failed, last try---> failed (+ a code_failed / notice_failed event)
       +--lease expired---+   (the worker died mid-send: any worker claims it again)

`next_at` is the one field a worker looks at: when a pending job is due, or when a claimed
job's lease runs out. Claiming is a single `find_one_and_update` on it, so two workers (in
one process or in many) never both hold a job. Delivery is at least once: a worker that
dies after the provider accepted a message but before recording it leaves the job to be
sent again when its lease expires. Finished jobs lose `next_at` and their ciphertext and
keep a small record (state, attempts, last error, masked destination) until `expires_at`.

The message text carries a one-time code, so it is stored only encrypted (Fernet, under a
key derived from SECRET_KEY for this use alone). Only features a single mongod, a replica
set and a sharded cluster all support are used (no transactions, no change streams); keep
`jobs` unsharded, since the claim's query does not name a shard key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from config import DeliverySettings

from .senders import Clock, Delivery, Message, SendFailed, mask

log = logging.getLogger("gatehouse.delivery.queue")

KEY_LABEL = b"gatehouse/jobs/v1"
# The audit log, as the composition root wires it: record(type, **fields).
Record = Callable[..., Awaitable[None]]


def job_cipher(secret_key: str) -> Fernet:
    """The jobs' own key, derived from SECRET_KEY under a label, so it is never the key of
    anything else (cookies, tokens) and changes when SECRET_KEY does."""
    digest = hmac.new(secret_key.encode("utf-8"), KEY_LABEL, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


async def _allow(message: Message) -> bool:
    return True


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): base, 2×base,
    4×base, … up to `cap`, so a provider that is down is not hammered."""
    return min(cap, base * 2 ** max(0, attempt - 1))


class DeliveryQueue:
    """Durable outbound messages: `enqueue` on the request path, a worker task per
    process (`start`/`stop`) that sends them, `run_once` for tests and tools."""

    def __init__(
        self,
        db: AsyncDatabase,
        clock: Clock,
        delivery: Delivery,
        record: Record,
        config: DeliverySettings,
        secret_key: str,
        *,
        max_attempts: int = 5,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        lease: float | None = None,
        poll_interval: float = 0.5,
        concurrency: int = 8,
        retention_days: int = 7,
        gate: Callable[[Message], Awaitable[bool]] = _allow,
    ) -> None:
        """`lease` (default: four send timeouts, at least 60 s) must outlast one send (an
        SMS try is up to three webhook calls of `delivery_timeout` each): a lease that runs
        out mid-send lets a second worker send the same message. `record(type, **fields)`
        writes the audit event of an outcome (`code_sent`, `code_failed`, `notice_failed`)."""
        self.jobs = db.jobs
        self.clock = clock
        self.delivery = delivery
        self.record = record
        self.cipher = job_cipher(secret_key)
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.lease = lease if lease is not None else max(60.0, 4 * config.delivery_timeout)
        self.poll_interval = poll_interval
        self.concurrency = max(1, concurrency)
        self.retention = timedelta(seconds=retention_days * 86400)
        # Unique per queue object, so two queues in one process are two workers.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.wake = asyncio.Event()
        # Asked before sending a `gated` job (`Codes.may_send`, in the server); allows all by default.
        self.gate = gate
        self.task: asyncio.Task[None] | None = None
        self.failing = False

    # ---- the request path ---------------------------------------------------------------

    async def enqueue(
        self, message: Message, *, account_id: int | None, kind: str = "message", gated: bool = False
    ) -> str:
        """Store `message` as a job due now and wake this process's worker; returns the
        job id. Raises the database's error when the job could not be written (the caller
        answers 503: nothing was promised).

        `kind="blank"`: a job written only so that a request for an unknown account does
        the same work as one for a known account (sealing, the insert, the wake); the
        worker settles it as `dropped` and sends nothing.

        `gated`: the worker asks `gate(message)` just before sending and drops the job
        when it says no. For messages whose request named something else than where they
        go (a reset asked for by username and texted to the account's phone, a notice):
        the destination's own caps are checked off the request path, where a refusal
        cannot change the answer."""
        now = self.clock()
        job_id = uuid.uuid4().hex
        await self.jobs.insert_one(
            {
                "_id": job_id,
                "kind": kind,
                "state": "pending",
                "attempts": 0,
                "next_at": now,
                "lease_until": None,
                "owner": None,
                "created": now,
                "account_id": account_id,
                "purpose": message.purpose,
                "channel": message.channel,
                "to_masked": mask(message.to),
                "sealed": self._seal(message),
                "gated": gated,
            }
        )
        self.wake.set()
        return job_id

    def _seal(self, message: Message) -> bytes:
        return self.cipher.encrypt(json.dumps(dataclasses.asdict(message)).encode("utf-8"))

    def _open(self, sealed: bytes) -> Message:
        return Message(**json.loads(self.cipher.decrypt(sealed)))

    # ---- the worker -----------------------------------------------------------------------

    def start(self) -> None:
        """Run the worker on the current event loop (once; a second call does nothing)."""
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        """Cancel the worker. A send in flight is abandoned; its lease expires and any
        worker sends it again."""
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        # Poll on a slow cadence for jobs from other processes and for retries coming due;
        # an enqueue in this process sets `wake` and is sent at once. Until `stop`: a
        # cancellation can be lost (Python 3.11's `wait_for` drops one that lands as its
        # wait completes; a driver may turn one into a network error), so the loop also
        # ends when it is no longer this queue's worker.
        me = asyncio.current_task()
        while self.task is me:
            self.wake.clear()
            processed = 0
            try:
                processed = await self.run_once()
                if self.failing:
                    log.info("delivery queue: reading jobs again")
                self.failing = False
            except Exception as e:  # noqa: BLE001 - the worker outlives any database outage
                if not self.failing:
                    log.warning("delivery queue cannot read jobs (%s); retrying", type(e).__name__)
                self.failing = True
            if not processed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.poll_interval)

    async def run_once(self) -> int:
        """Claim and process every job due now, `concurrency` at a time; returns how many
        were processed (sent, rescheduled or failed). A job is claimed only when a slot is
        free, so its lease starts when its send does. Raises when jobs cannot be claimed
        (after the sends already under way have finished)."""
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()

        count = 0
        try:
            while True:
                await slots.acquire()
                job = await self._claim()
                if job is None:
                    break
                count += 1
                task = asyncio.ensure_future(self._process(job))
                running.add(task)
                task.add_done_callback(finished)
        except asyncio.CancelledError:
            for task in running:  # stop(): abandon the sends too (their leases expire)
                task.cancel()
            raise
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        return count

    async def _claim(self) -> dict[str, Any] | None:
        """Take the oldest due job: pending and due, or claimed by a worker whose lease
        ran out. One atomic update, so exactly one worker gets it."""
        now = self.clock()
        lease_until = now + timedelta(seconds=self.lease)
        return await self.jobs.find_one_and_update(
            {"next_at": {"$lte": now}},
            {
                "$set": {
                    "state": "sending",
                    "owner": self.owner,
                    "lease_until": lease_until,
                    "next_at": lease_until,
                    "claimed_at": now,
                },
                "$inc": {"attempts": 1},
            },
            sort=[("next_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )

    async def _process(self, job: dict[str, Any]) -> None:
        """Send one claimed job and record the outcome. Never raises (but for
        cancellation): a failure to record leaves the lease to expire and the job to be
        tried again."""
        try:
            try:
                message = self._open(job["sealed"])
            except (InvalidToken, KeyError, TypeError, ValueError):
                # Sealed under another SECRET_KEY, or damaged: no retry can help.
                await self._give_up(job, "the job cannot be decrypted (was SECRET_KEY changed?)")
                return
            if job.get("kind") == "blank":
                await self._settle(job, "dropped", None)
                return
            if job.get("gated") and job["attempts"] == 1 and not await self.gate(message):
                await self._give_up(job, "the destination's own caps or country rules refuse it")
                return
            try:
                await self.delivery.send(message)
            except SendFailed as e:
                await self._attempt_failed(job, e.message)
            except Exception as e:  # noqa: BLE001 - a sender's bug fails one attempt, not the worker
                log.warning("delivery job %s: the sender raised %s", job["_id"], type(e).__name__)
                await self._attempt_failed(job, f"sender error: {type(e).__name__}")
            else:
                if await self._settle(job, "done", None) and job.get("purpose") != "notice":
                    await self.record(
                        "code_sent",
                        account_id=job.get("account_id"),
                        purpose=job.get("purpose"),
                        channel=job.get("channel"),
                        job_id=job["_id"],
                    )
        except Exception as e:  # noqa: BLE001 - recording failed; the lease will expire
            log.warning("delivery job %s: could not record its outcome (%s)", job["_id"], type(e).__name__)

    async def _attempt_failed(self, job: dict[str, Any], reason: str) -> None:
        if job["attempts"] >= self.max_attempts:
            await self._give_up(job, reason)
            return
        delay = backoff_delay(job["attempts"], self.backoff, self.backoff_max)
        await self._update_claimed(
            job,
            {
                "$set": {
                    "state": "pending",
                    "next_at": self.clock() + timedelta(seconds=delay),
                    "lease_until": None,
                    "last_error": reason,
                }
            },
        )

    async def _give_up(self, job: dict[str, Any], reason: str) -> None:
        """The job has failed for good: keep the record, and tell the audit log, whose
        `code_failed` / `notice_failed` events are what operators watch."""
        if not await self._settle(job, "failed", reason):
            return
        log.warning(
            "delivery job %s (%s %s to %s) failed after %d attempts: %s",
            job["_id"],
            job.get("channel"),
            job.get("purpose"),
            job.get("to_masked"),
            job["attempts"],
            reason,
        )
        await self.record(
            "notice_failed" if job.get("purpose") == "notice" else "code_failed",
            account_id=job.get("account_id"),
            outcome="failed",
            reason=reason,
            purpose=job.get("purpose"),
            channel=job.get("channel"),
            job_id=job["_id"],
        )

    async def _settle(self, job: dict[str, Any], state: str, reason: str | None) -> bool:
        """Done or failed: drop the ciphertext and `next_at` (no worker looks at it again),
        keep a small record until `expires_at`."""
        now = self.clock()
        return await self._update_claimed(
            job,
            {
                "$set": {
                    "state": state,
                    "finished_at": now,
                    "expires_at": now + self.retention,
                    "lease_until": None,
                    "last_error": reason,
                },
                "$unset": {"sealed": "", "next_at": ""},
            },
        )

    async def _update_claimed(self, job: dict[str, Any], update: dict[str, Any]) -> bool:
        """Apply `update` only while this claim is still ours (same owner, same attempt):
        a worker whose lease ran out and was taken over must not overwrite the new
        holder's state. False when it was taken over."""
        result = await self.jobs.update_one(
            {"_id": job["_id"], "owner": self.owner, "attempts": job["attempts"]}, update
        )
        if result.matched_count == 0:
            log.warning("delivery job %s: lease lost to another worker before its outcome was recorded", job["_id"])
            return False
        return True
