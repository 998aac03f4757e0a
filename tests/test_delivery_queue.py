"""The delivery queue against the real database and the real sinks (an SMTP server and
an SMS webhook on loopback): jobs arrive, are stored sealed, retry with backoff, fail
for the record, are sent once between competing workers, survive a dead worker and a
database error."""

from __future__ import annotations

import asyncio
import logging

import pytest
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient

from delivery.queue import DeliveryQueue, job_cipher
from devdb import free_port
from models.db import connect
from tests.conftest import unique, unique_phone


def make_queue(gatehouse, db=None, secret_key=None, **knobs) -> DeliveryQueue:
    """A queue over the test's database (or `db`: another client's view of it)."""
    return DeliveryQueue(
        gatehouse.db if db is None else db,
        gatehouse.clock,
        gatehouse.delivery,
        gatehouse.queue.record,
        gatehouse.config.delivery,
        secret_key or gatehouse.config.secret_key,
        **knobs,
    )


@pytest.fixture
def own_queue_only(gatehouse):
    """Stop the Gatehouse's own worker, so the queues a test builds are the only ones
    claiming jobs and the test decides when they run."""
    gatehouse.queue.stop()


def code_message(gatehouse, channel: str, to: str, code: str):
    return gatehouse.delivery.compose(channel, to, "login", code, 5)


async def wait_for_state(gatehouse, job_id: str, state: str, timeout: float = 5.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        job = await gatehouse.db.jobs.find_one({"_id": job_id})
        if job and job["state"] == state:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {state!r}: {job}")


async def raw_job(gatehouse, job_id: str) -> bytes:
    """The job exactly as stored: its BSON bytes."""
    options = gatehouse.db.codec_options.with_options(document_class=RawBSONDocument)
    return (await gatehouse.db.jobs.with_options(codec_options=options).find_one({"_id": job_id})).raw


async def test_jobs_arrive_at_the_sms_and_smtp_sinks(sinks, gatehouse):
    """Through the Gatehouse's own worker (started by setup): a code by SMS and by e-mail."""
    assert gatehouse.queue.task is not None
    phone, address = unique_phone(), f"{unique()}@example.test"
    sms_id = await gatehouse.queue.enqueue(code_message(gatehouse, "sms", phone, "384756"), account_id=7)
    mail_id = await gatehouse.queue.enqueue(code_message(gatehouse, "email", address, "918273"), account_id=None)
    assert await sinks.code_for(phone) == "384756"
    assert await sinks.code_for(address) == "918273"
    (mail,) = sinks.to(address)
    assert mail["subject"].startswith("Your Gatehouse code") and "918273" in mail["html"]
    for job_id in (sms_id, mail_id):
        job = await wait_for_state(gatehouse, job_id, "done")
        assert job["attempts"] == 1 and job["owner"] == gatehouse.queue.owner
        assert "sealed" not in job and "next_at" not in job
        kept = (job["expires_at"] - job["finished_at"]).total_seconds()
        assert kept == 7 * 86400
    assert (await gatehouse.db.jobs.find_one({"_id": sms_id}))["account_id"] == 7


async def test_enqueue_wakes_an_idle_worker_at_once(sinks, gatehouse, own_queue_only):
    """A worker that polls only every 30 s still sends within moments: enqueue wakes it."""
    queue = make_queue(gatehouse, poll_interval=30.0)
    queue.start()
    try:
        await asyncio.sleep(0.2)  # it has looked once and is waiting
        phone = unique_phone()
        started = asyncio.get_running_loop().time()
        await queue.enqueue(code_message(gatehouse, "sms", phone, "552817"), account_id=None)
        assert await sinks.code_for(phone, timeout=5.0) == "552817"
        assert asyncio.get_running_loop().time() - started < 2.0
    finally:
        queue.stop()


async def test_the_stored_job_holds_no_plaintext(sinks, gatehouse, own_queue_only):
    queue = make_queue(gatehouse)
    phone = "+14155550123"
    message = code_message(gatehouse, "sms", phone, "493817")
    job_id = await queue.enqueue(message, account_id=3)
    stored = await raw_job(gatehouse, job_id)
    assert b"493817" not in stored and b"4155550123" not in stored and b"Never share" not in stored
    job = await gatehouse.db.jobs.find_one({"_id": job_id})
    assert job["state"] == "pending" and job["attempts"] == 0 and job["lease_until"] is None
    assert job["to_masked"] == "+1415555****" and job["purpose"] == "login" and job["channel"] == "sms"
    # What is sealed is the message, under the key derived from SECRET_KEY for jobs.
    assert job_cipher(gatehouse.config.secret_key).decrypt(job["sealed"]).decode().count("493817") == 1

    assert await queue.run_once() == 1
    assert await sinks.code_for(phone) == "493817"
    stored = await raw_job(gatehouse, job_id)
    assert b"493817" not in stored and b"sealed" not in stored


async def test_a_failing_provider_is_retried_with_backoff_then_recorded(sinks, gatehouse, clock, own_queue_only):
    sinks.sms_status = 500
    queue = make_queue(gatehouse, max_attempts=3, backoff=1.0, backoff_max=60.0)
    phone = unique_phone()
    job_id = await queue.enqueue(code_message(gatehouse, "sms", phone, "664213"), account_id=42)

    delays = []
    for attempt in (1, 2):
        assert await queue.run_once() == 1
        job = await gatehouse.db.jobs.find_one({"_id": job_id})
        assert job["state"] == "pending" and job["attempts"] == attempt and job["last_error"]
        delays.append((job["next_at"] - clock()).total_seconds())
        assert await queue.run_once() == 0  # not due before its backoff
        clock.advance(delays[-1] + 0.01)
    # Exponential: about 1 s after the first failure, 2 s after the second.
    assert 0.5 < delays[0] <= 1.0 and 1.5 < delays[1] <= 2.0

    assert await queue.run_once() == 1
    job = await gatehouse.db.jobs.find_one({"_id": job_id})
    assert job["state"] == "failed" and job["attempts"] == 3
    assert "sealed" not in job and "next_at" not in job and job["expires_at"] > clock()
    assert await queue.run_once() == 0  # failed for good: no one takes it again
    assert sinks.to(phone) == []
    (event,) = await gatehouse.events.find(type="code_failed")
    assert event["outcome"] == "failed" and event["account_id"] == 42 and event["reason"]
    assert event["purpose"] == "login" and event["channel"] == "sms" and event["job_id"] == job_id
    assert event["style"] == "queue"


@pytest.mark.parametrize("settings", [{"smtp_url": f"smtp://127.0.0.1:{free_port()}", "delivery_timeout": 2.0}])
async def test_a_notice_that_cannot_be_sent_is_a_notice_failed_event(sinks, gatehouse, settings, own_queue_only):
    queue = make_queue(gatehouse, max_attempts=1)
    notice = gatehouse.delivery.compose_notice("email", f"{unique()}@example.test", "password was changed")
    job_id = await queue.enqueue(notice, account_id=5)
    assert await queue.run_once() == 1
    assert (await gatehouse.db.jobs.find_one({"_id": job_id}))["state"] == "failed"
    (event,) = await gatehouse.events.find(type="notice_failed")
    assert event["account_id"] == 5 and event["channel"] == "email"
    assert await gatehouse.events.find(type="code_failed") == []


async def test_two_workers_send_each_of_20_jobs_exactly_once(sinks, gatehouse, mongo_uri, own_queue_only):
    """Two queues, each with its own client (as two processes would have), race on one
    database."""
    other_client: AsyncMongoClient = connect(mongo_uri, gatehouse.config.database.db_timeout_ms)
    try:
        first = make_queue(gatehouse, concurrency=4)
        second = make_queue(gatehouse, db=other_client[gatehouse.db.name], concurrency=4)
        sent = {}
        for i in range(20):
            channel = "sms" if i % 2 else "email"
            to = unique_phone() if channel == "sms" else f"{unique()}@example.test"
            sent[to] = str(700100 + i)
            await first.enqueue(code_message(gatehouse, channel, to, sent[to]), account_id=i)
        counts = await asyncio.gather(first.run_once(), second.run_once())
        assert sum(counts) == 20
        for to, code in sent.items():
            arrived = sinks.to(to)
            assert len(arrived) == 1 and code in arrived[0]["body"], (to, arrived)
        assert len(sinks.messages) == 20
        assert await gatehouse.db.jobs.count_documents({"state": "done", "attempts": 1}) == 20
        assert await asyncio.gather(first.run_once(), second.run_once()) == [0, 0]
    finally:
        await other_client.close()


async def test_a_job_whose_worker_died_is_sent_by_another(sinks, gatehouse, clock, own_queue_only):
    dead = make_queue(gatehouse, lease=30.0)
    alive = make_queue(gatehouse, lease=30.0)
    phone = unique_phone()
    job_id = await alive.enqueue(code_message(gatehouse, "sms", phone, "275931"), account_id=None)
    claimed = await dead._claim()  # the worker claims the job, then dies before sending
    assert claimed["_id"] == job_id and claimed["state"] == "sending"

    assert await alive.run_once() == 0  # the lease still holds
    clock.advance(31)
    assert await alive.run_once() == 1
    assert await sinks.code_for(phone) == "275931"
    job = await gatehouse.db.jobs.find_one({"_id": job_id})
    assert job["state"] == "done" and job["attempts"] == 2 and job["owner"] == alive.owner
    # Had it only stalled, the first worker could not overwrite the outcome afterwards.
    assert await dead._settle(claimed, "failed", "late") is False
    assert (await gatehouse.db.jobs.find_one({"_id": job_id}))["state"] == "done"
    assert len(sinks.to(phone)) == 1


async def test_a_database_error_does_not_stop_the_worker(sinks, gatehouse, caplog, own_queue_only):
    """A job the database cannot update (`$inc` on a string) makes every claim fail: the
    worker warns once, keeps polling, and sends as soon as the database cooperates."""
    caplog.set_level(logging.INFO, logger="gatehouse.delivery.queue")
    phone = unique_phone()
    job_id = await make_queue(gatehouse).enqueue(code_message(gatehouse, "sms", phone, "830462"), account_id=None)
    await gatehouse.db.jobs.update_one({"_id": job_id}, {"$set": {"attempts": "corrupt"}})
    queue = make_queue(gatehouse, poll_interval=0.05)
    queue.start()
    try:
        await asyncio.sleep(0.5)  # about ten failed polls
        assert not queue.task.done()
        warnings = [r for r in caplog.records if "cannot read jobs" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert sinks.to(phone) == []

        await gatehouse.db.jobs.update_one({"_id": job_id}, {"$set": {"attempts": 0}})
        assert await sinks.code_for(phone) == "830462"
        await wait_for_state(gatehouse, job_id, "done")
        for _ in range(100):  # logged when the worker's round that sent it returns
            if any("reading jobs again" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        assert any("reading jobs again" in r.getMessage() for r in caplog.records)
    finally:
        queue.stop()


async def test_a_job_sealed_under_another_secret_fails_at_once(sinks, gatehouse, own_queue_only):
    """After a SECRET_KEY change, old jobs cannot be opened: no retries, one event."""
    old = make_queue(gatehouse, secret_key="an-older-secret-" + "y" * 40)
    job_id = await old.enqueue(code_message(gatehouse, "sms", unique_phone(), "119283"), account_id=9)
    assert await make_queue(gatehouse).run_once() == 1
    job = await gatehouse.db.jobs.find_one({"_id": job_id})
    assert job["state"] == "failed" and job["attempts"] == 1 and "decrypt" in job["last_error"]
    (event,) = await gatehouse.events.find(type="code_failed")
    assert event["account_id"] == 9
    assert sinks.messages == []
