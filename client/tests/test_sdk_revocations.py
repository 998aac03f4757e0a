"""The revocation feed, followed: against a fake feed (a real HTTP server speaking
contract19.md's `GET /auth/revocations`) for what only a fake can stage — outages,
refused keys, pages — and against Gatehouse's own feed end to end, when this build has
one. The bound: a kick is refused by the app within BOUND seconds."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from conftest import SERVICE_KEY, FakeFeed, new_pair
from gatehouse_client import InvalidToken, RevocationSet, RevocationWatcher, Verifier

BOUND = 1.0  # seconds from "the session ended" to "the app refuses its token": the median must keep it
# ...and no single kick may take longer than this: the machine running the suite is shared
# (2 cores), and Gatehouse's feed settles half a second behind its clock before it tells
# (measured end to end on loopback: 0.56-0.70 s); the feed's own test allows the same.
WORST = 2.5


def report(label: str, delays: list[float]) -> None:
    """The measured bound, printed (run with -s to see it)."""
    median, worst = statistics.median(delays) * 1000, max(delays) * 1000
    print(f"\n{label}: median {median:.1f} ms, max {worst:.1f} ms over {len(delays)}")


def revoked(verifier: Verifier, token: str) -> bool:
    """Whether the verifier refuses the token as revoked (no other refusal may happen)."""
    try:
        verifier.verify(token)
    except InvalidToken as e:
        assert e.reason == "revoked", e
        return True
    return False


async def until(predicate, timeout: float = 5.0, step: float = 0.005) -> float:
    """Seconds until `predicate()` held (AssertionError past `timeout`)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError("never happened")
        await asyncio.sleep(step)
    return time.monotonic() - started


async def test_a_published_session_is_known_within_the_bound(fake_feed: FakeFeed):
    watcher = RevocationWatcher(fake_feed.url, SERVICE_KEY)
    await watcher.start()
    assert watcher.cursor == "0" and watcher.polls == 1
    delays = []
    for n in range(20):
        sid = f"s{n}"
        fake_feed.publish_session(sid, 7)
        delays.append(await until(lambda sid=sid: watcher.revocations.is_revoked(sid)))
    await watcher.stop()
    report("fake feed: published -> known", delays)
    assert max(delays) < BOUND
    assert not watcher.revocations.is_revoked("never-kicked")
    # Long polls: the watcher asked with wait=25 and the since it was given.
    assert all(q.get("wait") == "25" for q in fake_feed.requests[1:])
    assert [q.get("since") for q in fake_feed.requests[1:4]] == ["0", "1", "2"]


async def test_after_errors_it_backs_off_and_resumes_from_its_cursor(fake_feed: FakeFeed):
    watcher = RevocationWatcher(fake_feed.url, SERVICE_KEY, backoff_min=0.05, backoff_max=0.2, wait=1)
    await watcher.start()
    fake_feed.publish_session("before-outage")  # answers the held poll (cursor 1)
    await until(lambda: watcher.revocations.is_revoked("before-outage"))
    fake_feed.fail_next(500, 503, 502, 500)  # the next four polls fail...
    fake_feed.publish_session("during-outage")  # ...while this one is waiting
    await until(lambda: watcher.revocations.is_revoked("during-outage"), timeout=5)
    assert watcher.failures == 0 and watcher.cursor == "2"  # reset by the answer after the outage
    # Each failed poll was asked again from the cursor it had: none skipped, none repeated.
    sinces = [q.get("since") for q in fake_feed.requests]
    assert sinces.count("1") >= 5, sinces
    await watcher.stop()


async def test_a_refused_key_is_retried_without_crashing(fake_feed: FakeFeed):
    watcher = RevocationWatcher(fake_feed.url, "wrong-key", backoff_min=0.02, backoff_max=0.05)
    await watcher.start(ready_timeout=0.3)
    assert watcher.polls == 0 and watcher.failures >= 2
    assert watcher._task is not None and not watcher._task.done()
    await watcher.stop()


async def test_pages_are_read_until_more_is_false(fake_feed: FakeFeed):
    fake_feed.page_size = 2
    watcher = RevocationWatcher(fake_feed.url, SERVICE_KEY)
    await watcher.start()
    for n in range(7):
        fake_feed.publish_session(f"p{n}")
    await until(lambda: all(watcher.revocations.is_revoked(f"p{n}") for n in range(7)))
    assert watcher.cursor == "7"
    await watcher.stop()


async def test_a_disabled_account_is_refused_until_enabled(fake_feed: FakeFeed):
    watcher = RevocationWatcher(fake_feed.url, SERVICE_KEY)
    await watcher.start()
    fake_feed.publish_account(42, "uid-42", disabled=True)
    await until(lambda: watcher.revocations.is_revoked("any-sid", 42))
    assert watcher.revocations.is_revoked("any-sid", None, "uid-42")  # a token with no account_id
    fake_feed.publish_account(42, "uid-42", disabled=False)
    await until(lambda: not watcher.revocations.is_revoked("any-sid", 42))
    await watcher.stop()


async def test_a_cursor_the_feed_refuses_starts_over_from_now(fake_feed: FakeFeed):
    watcher = RevocationWatcher(fake_feed.url, SERVICE_KEY, cursor="garbage", backoff_min=0.01)
    await watcher.start()
    assert watcher.cursor == "0"
    fake_feed.publish_session("after-restart")
    await until(lambda: watcher.revocations.is_revoked("after-restart"))
    await watcher.stop()


async def test_the_watcher_runs_in_a_thread_for_sync_apps(fake_feed: FakeFeed):
    saved: list[str] = []
    watcher = RevocationWatcher(fake_feed.url, SERVICE_KEY, on_cursor=saved.append)
    await asyncio.to_thread(watcher.start_thread)
    assert watcher.polls >= 1
    fake_feed.publish_session("threaded")
    await until(lambda: watcher.revocations.is_revoked("threaded"))
    assert saved[-1] == "1"
    await asyncio.to_thread(watcher.stop_thread)
    assert watcher._thread is None


def test_the_set_is_bounded_by_time_and_by_size():
    now = [0.0]
    revoked = RevocationSet(retention=100, max_entries=4, clock=lambda: now[0])
    revoked.end_session("a")
    now[0] = 50
    revoked.end_session("b")
    revoked.set_account(1, "u1", True)
    assert revoked.is_revoked("a") and revoked.is_revoked("b") and revoked.is_revoked("x", 1)
    now[0] = 101  # "a" has outlived the longest access token
    assert not revoked.is_revoked("a") and revoked.is_revoked("b")
    for sid in ("c", "d", "e"):
        revoked.end_session(sid)
    # b, c, d, e and the account (by id and by uid) are 6: the two oldest sessions went.
    assert len(revoked) == 4 and revoked.overflowed == 2
    assert not revoked.is_revoked("b") and not revoked.is_revoked("c")
    assert revoked.is_revoked("e") and revoked.is_revoked("x", None, "u1")


async def test_fail_closed_after_refuses_while_the_feed_is_silent(api, base_url, fake_feed: FakeFeed, verifiers):
    _, pair = await new_pair(api, base_url)
    revocations = RevocationSet()
    verifier = verifiers(base_url, revocations=revocations, fail_closed_after=60)
    with pytest.raises(InvalidToken) as e:
        await verifier.averify(pair.access_token)  # never heard from the feed
    assert e.value.reason == "unavailable"
    watcher = RevocationWatcher(fake_feed.url, SERVICE_KEY, revocations=revocations)
    await watcher.start()
    assert (await verifier.averify(pair.access_token)).uid
    await watcher.stop()


async def test_end_to_end_a_kick_at_gatehouse_is_refused_within_the_bound(
    api, base_url, live_feed, admin_client, verifiers
):
    """Against Gatehouse's own feed (skipped, saying why, until this build has it)."""
    watcher = RevocationWatcher(live_feed, SERVICE_KEY)
    verifier = verifiers(base_url, revocations=watcher.revocations)
    await watcher.start()
    delays = []
    for _ in range(5):
        _, pair = await new_pair(api, base_url)
        principal = await verifier.averify(pair.access_token)
        await admin_client.kick(principal.session_id)
        delays.append(await until(lambda token=pair.access_token: revoked(verifier, token)))
    # A disabled account: its sessions end, and the account itself is listed as disabled.
    user, pair = await new_pair(api, base_url)
    await verifier.averify(pair.access_token)
    await admin_client.disable(user["id"])
    delays.append(await until(lambda: revoked(verifier, pair.access_token)))
    await until(lambda: watcher.revocations.is_revoked("any-other-session", user["id"]))
    await watcher.stop()
    report("live feed: kicked -> refused", delays)
    assert statistics.median(delays) < BOUND and max(delays) < WORST
