"""Hostile input to the revocation feed: odd `since` and `wait` values are 400s, never a
500 (a cursor past the year 9999 included)."""

from __future__ import annotations

import pytest

from tests.test_oauth import KEYS
from tests.test_revocations import BEARER, feed

pytestmark = pytest.mark.parametrize("settings", [KEYS])


@pytest.mark.parametrize(
    "since",
    ["r1.999999999999999", "r1.99999999999999", "r1.0", "r1.", "r1.-5", "r1.1e5", "r1.%00", "r2.1", "x" * 40],
)
async def test_hostile_cursors_get_a_400_not_a_500(api, settings, since):
    r = await feed(api, since)
    assert r.status in (200, 400), (r.status, r.data)
    if r.status == 400:
        assert r.data["error"] == "invalid_request"


@pytest.mark.parametrize("wait", ["-1", "26", "1e9", "abc", "99999999999999999999999", "0x10", "%201", "1.5"])
async def test_hostile_waits_get_a_400_not_a_500(api, settings, wait):
    r = await api.get("/auth/revocations?wait=" + wait, headers=BEARER)
    assert r.status in (200, 400), (r.status, r.data)
