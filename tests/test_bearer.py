"""RFC 6750 on the wire (issue 18): every 401 carries `WWW-Authenticate: Bearer
realm="gatehouse"` (the test harness checks it on every answer of every test), with
`error="invalid_token"` when a token was presented and is not a live one."""

from __future__ import annotations

import pytest

from tests.conftest import login, register

BARE = 'Bearer realm="gatehouse"'
INVALID = 'Bearer realm="gatehouse", error="invalid_token"'


async def test_a_failed_login_gets_the_bare_challenge(api):
    user = await register(api)
    r = await api.post("/auth/auth", {"username": user["username"], "password": "Wrong-pass-123"})
    assert r.status == 401 and r.headers["WWW-Authenticate"] == BARE


@pytest.mark.parametrize("path", ["/api/auth/users/", "/admin/api/sessions"])
async def test_a_dead_or_unknown_token_gets_invalid_token_and_none_the_bare_one(api, path):
    user = await register(api)
    token = await login(api, user)
    assert (await api.post("/auth/logout", token=token)).status == 200
    for sent in (token, "Bearer " + "x" * 40):
        r = await api.get(path, token=sent)
        assert r.status == 401 and r.headers["WWW-Authenticate"] == INVALID, (sent, r.status, r.data)
    r = await api.get(path)
    assert r.status == 401 and r.headers["WWW-Authenticate"] == BARE


async def test_other_errors_carry_no_challenge(api):
    user = await register(api)
    token = await login(api, user)
    r = await api.get("/auth/me", token=token)
    assert r.status == 200 and "WWW-Authenticate" not in r.headers
    r = await api.post("/auth/auth", {"username": user["username"]})
    assert r.status == 400 and "WWW-Authenticate" not in r.headers
