"""Review of issue 19 (s19-review): the watcher against Gatehouse's own feed."""

from __future__ import annotations

import pytest
from conftest import SERVICE_KEY, new_pair
from gatehouse_client import RevocationWatcher
from test_sdk_revocations import revoked, until


@pytest.mark.parametrize("wait", [2.5, 0.5])
async def test_a_fractional_wait_still_learns_of_a_kick(api, base_url, live_feed, admin_client, verifiers, wait):
    """`wait` is a float in the SDK and sent as `2.5`; Gatehouse's feed takes whole
    seconds only and answers 400, which the watcher reads as "cursor refused": it starts
    over from now on every poll and never learns of a kick, while looking healthy."""
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
