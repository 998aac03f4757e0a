"""The watcher keeps to the feed's contract: `wait` in whole seconds, the cursor dropped
only when the feed refuses the cursor itself, and no spinning when polls come back at
once."""

from __future__ import annotations

import asyncio

import pytest
from conftest import SERVICE_KEY, FakeFeed, new_pair
from gatehouse_client import RevocationWatcher
from test_sdk_revocations import revoked, until


@pytest.mark.parametrize("wait", [2.5, 0.5])
async def test_a_fractional_wait_still_learns_of_a_kick(api, base_url, live_feed, admin_client, verifiers, wait):
    """Gatehouse's feed takes whole seconds; a `wait=2.5` sent as is got a 400, which the
    watcher took for a refused cursor: it started over from now on every poll and never
    learned of a kick, while looking healthy."""
    watcher = RevocationWatcher(live_feed, SERVICE_KEY, wait=wait)
    verifier = verifiers(base_url, revocations=watcher.revocations)
    await watcher.start()
    _, pair = await new_pair(api, base_url)
    principal = await verifier.averify(pair.access_token)
    await admin_client.kick(principal.session_id)
    try:
        await until(lambda: revoked(verifier, pair.access_token), timeout=6)
    finally:
        await watcher.stop()


async def test_a_400_that_is_not_about_the_cursor_keeps_it(fake_feed: FakeFeed):
    watcher = RevocationWatcher(fake_feed.url, SERVICE_KEY, backoff_min=0.05, backoff_max=0.1, wait=1)
    await watcher.start()
    fake_feed.fail_next(400)  # the held poll wakes to a 400 about something else...
    fake_feed.publish_session("while-refused")
    await until(lambda: watcher.revocations.is_revoked("while-refused"))  # ...and resumes from its cursor
    await watcher.stop()
    assert [q.get("since") for q in fake_feed.requests[1:3]] == ["0", "0"]


async def test_a_refused_cursor_starts_over_from_now(fake_feed: FakeFeed):
    watcher = RevocationWatcher(fake_feed.url, SERVICE_KEY, cursor="corrupt", backoff_min=0.05, wait=1)
    await watcher.start(ready_timeout=2)
    await watcher.stop()
    assert watcher.cursor == "0" and [q.get("since") for q in fake_feed.requests[:2]] == ["corrupt", None]


async def test_a_watcher_that_does_not_wait_does_not_spin(fake_feed: FakeFeed):
    watcher = RevocationWatcher(fake_feed.url, SERVICE_KEY, wait=0)
    await watcher.start()
    await asyncio.sleep(1.0)
    await watcher.stop()
    assert 2 <= len(fake_feed.requests) <= 6, len(fake_feed.requests)  # one poll per 0.25 s, not thousands


@pytest.fixture
def html_proxy():
    """A real HTTP server answering every request with 200 and an HTML page, as a captive
    portal or a misrouted proxy does."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Page(BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"<html><body>Please log in to the Wi-Fi</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_a_reply_that_is_not_json_is_unavailable_not_a_crash(html_proxy, verifiers):
    import jwt as pyjwt
    from gatehouse_client import InvalidToken

    verifier = verifiers(html_proxy, service_key=SERVICE_KEY)
    signed = pyjwt.encode({"sub": "x"}, "k" * 32, "HS256", headers={"kid": "unknown", "typ": "at+jwt"})
    for token in ("an-opaque-token", signed):
        with pytest.raises(InvalidToken) as raised:
            await verifier.averify(token)
        assert raised.value.reason == "unavailable", raised.value
        with pytest.raises(InvalidToken) as raised:
            await asyncio.to_thread(verifier.verify, token)
        assert raised.value.reason in ("unavailable", "invalid"), raised.value
