"""The async clients for the native and the admin API, against a live Gatehouse."""

from __future__ import annotations

import pytest
from conftest import PASSWORD, SERVICE_KEY, register
from gatehouse_client import AdminClient, GatehouseClient, GatehouseError, SessionInfo, TokenPair


async def test_login_me_sessions_refresh_logout(api, base_url):
    user = await register(api)
    async with GatehouseClient(base_url) as gh:
        pair = await gh.login(user["email"], PASSWORD)  # any login name
        assert isinstance(pair, TokenPair) and pair.token_type == "Bearer" and pair.expires_in > 0
        me = await gh.me()
        assert me.account.id == user["id"] and me.account.username == user["username"]
        sessions = await gh.sessions()
        assert all(isinstance(s, SessionInfo) for s in sessions)
        assert [s.id for s in sessions if s.current] == [me.session_id]
        assert sessions[0].kind == "jwt" and not sessions[0].revoked
        newer = await gh.refresh()
        assert newer.refresh_token != pair.refresh_token and gh.tokens == newer
        assert (await gh.me()).session_id == me.session_id  # the same session, a new pair
        await gh.logout()
        assert gh.tokens is None
        with pytest.raises(GatehouseError) as e:
            await gh.me(newer.access_token)
        assert e.value.status == 403 and e.value.code == "NOT_AUTHENTICATED"
        with pytest.raises(GatehouseError) as e:
            await gh.me()
        assert e.value.status == 0 and e.value.code == "NOT_AUTHENTICATED"


async def test_errors_carry_status_and_the_servers_code(api, base_url):
    user = await register(api)
    async with GatehouseClient(base_url) as gh:
        with pytest.raises(GatehouseError) as e:
            await gh.login(user["username"], "Wrong-password-1")
        assert (e.value.status, e.value.code) == (401, "INVALID_CREDENTIALS") and e.value.message
    async with GatehouseClient("http://127.0.0.1:9", timeout=1) as down:
        with pytest.raises(GatehouseError) as e:
            await down.login("a", "b")
        assert (e.value.status, e.value.code) == (0, "TRANSPORT")


async def test_the_admin_client_lists_and_kicks(api, base_url, admin_client: AdminClient):
    user = await register(api)
    async with GatehouseClient(base_url) as one, GatehouseClient(base_url) as two:
        await one.login(user["username"], PASSWORD)
        await two.login(user["username"], PASSWORD)
        first = (await one.me()).session_id
        page = await admin_client.sessions(account=user["id"], active=True)
        assert {s.id for s in page.sessions} == {first, (await two.me()).session_id}
        assert all(s.account_id == user["id"] and s.account_username == user["username"] for s in page.sessions)
        assert await admin_client.kick(first) == first
        with pytest.raises(GatehouseError) as e:
            await one.me()
        assert e.value.code == "NOT_AUTHENTICATED"
        listed = {s.id: s for s in (await admin_client.sessions(account=user["id"])).sessions}
        assert listed[first].session.revoked and listed[first].revoked_by == "service"
        assert await admin_client.kick_account(user["id"]) == 1
        with pytest.raises(GatehouseError):
            await two.me()
    with pytest.raises(GatehouseError) as e:
        await admin_client.kick("no-such-session")
    assert e.value.status == 404 and e.value.code == "NOT_FOUND"
    async with AdminClient(base_url, "not-the-" + SERVICE_KEY) as wrong:
        with pytest.raises(GatehouseError) as e:
            await wrong.sessions()
        assert e.value.status in (401, 403) and e.value.code
