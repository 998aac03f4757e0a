"""One client, one address (issue 14): `canonical_ip` gives every address one spelling,
`ip_limit_key` groups an IPv6 client by its /64, and the handlers hand the domain only
canonical addresses, so respelling an address never buys a fresh per-IP budget."""

from __future__ import annotations

import pytest

from models.common import Context, canonical_ip, ip_limit_key
from tests.conftest import PASSWORD, assert_error, register


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),  # IPv4-mapped: the IPv4 address itself
        ("::FFFF:c000:0201", "192.0.2.1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:db8::0001", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),  # a zone names our interface, not the client
        ("local", "local"),  # not an address: kept as it is
        ("", ""),
        ("999.1.1.1", "999.1.1.1"),
        ("unknown, 10.0.0.1", "unknown, 10.0.0.1"),
    ],
)
def test_canonical_ip(raw, canonical):
    assert canonical_ip(raw) == canonical


@pytest.mark.parametrize(
    "ip, key",
    [
        ("198.51.100.7", "198.51.100.7"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("garbage", "garbage"),
    ],
)
def test_ip_limit_key(ip, key):
    assert ip_limit_key(ip) == key
    assert Context(ip=ip).ip_key == key


def test_every_spelling_of_an_ipv6_address_is_one_key():
    spellings = [
        "2001:db8:0:0:1:0:0:1",
        "2001:DB8::1:0:0:1",
        "2001:0db8:0000:0000:0001:0000:0000:0001",
        "[2001:db8::1:0:0:1]",
    ]
    assert {canonical_ip(s) for s in spellings} == {"2001:db8::1:0:0:1"}
    assert {ip_limit_key(s) for s in spellings} == {"2001:db8::/64"}
    # Another address of the same /64 is the same client; the next /64 is not.
    assert ip_limit_key("2001:db8::ffff") == "2001:db8::/64"
    assert ip_limit_key("2001:db8:0:1::1") == "2001:db8:0:1::/64"


# ---- through the app, behind a proxy -------------------------------------------------------

PROXIED = {"trust_proxy": 1, "login_failures_per_ip": 3, "login_failures_per_account": 100}


async def fail_login(api, user: dict, forwarded_for: str):
    return await api.post(
        "/auth/auth",
        {"username": user["username"], "password": "not-the-password"},
        headers={"X-Forwarded-For": forwarded_for},
    )


@pytest.mark.parametrize("settings", [PROXIED])
async def test_an_ipv4_mapped_address_is_the_ipv4_client(api, gatehouse):
    user = await register(api)
    for spelling in ("::ffff:198.51.100.7", "198.51.100.7", "::FFFF:198.51.100.7"):
        assert_error(await fail_login(api, user, spelling), 401, "INVALID_CREDENTIALS")
    # The limit is reached for the one client, whichever spelling comes next ...
    for spelling in ("198.51.100.7", "::ffff:198.51.100.7", "::ffff:c633:6407"):
        r = await fail_login(api, user, spelling)
        assert_error(r, 429, "RATE_LIMITED")
        assert int(r.headers["Retry-After"]) > 0
    # ... and only for it: another address still gets the ordinary answer.
    assert_error(await fail_login(api, user, "198.51.100.8"), 401, "INVALID_CREDENTIALS")
    # What is recorded is the canonical address.
    assert await stored_ip(api, gatehouse, user, "::ffff:203.0.113.9") == "203.0.113.9"


@pytest.mark.parametrize("settings", [PROXIED])
async def test_an_ipv6_client_is_its_slash_64(api, gatehouse):
    user = await register(api)
    for address in ("2001:db8:1:2::1", "2001:DB8:1:2:0:0:0:1", "2001:db8:1:2:abcd::99"):
        assert_error(await fail_login(api, user, address), 401, "INVALID_CREDENTIALS")
    # Any address in that /64 is refused now, however it is written ...
    for address in ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:0db8:0001:0002::1"):
        assert_error(await fail_login(api, user, address), 429, "RATE_LIMITED")
    # ... but the neighbouring /64 is another client.
    assert_error(await fail_login(api, user, "2001:db8:1:3::1"), 401, "INVALID_CREDENTIALS")
    # Sessions and events keep the address itself (canonical), not the /64.
    assert await stored_ip(api, gatehouse, user, "2001:DB8:5:0:0:0:0:0001") == "2001:db8:5::1"


async def stored_ip(api, gatehouse, user: dict, forwarded_for: str) -> str:
    """Log in from `forwarded_for`; the address the new session recorded."""
    r = await api.post(
        "/auth/auth",
        {"username": user["username"], "password": PASSWORD},
        headers={"X-Forwarded-For": forwarded_for},
    )
    assert r.status == 200
    session = await gatehouse.db.sessions.find_one({"_id": r.data["data"]["session"]})
    return session["ip"]


@pytest.mark.parametrize(
    "raw, canonical",
    [("192.0.2.1:5678", "192.0.2.1"), ("[2001:db8::1]:443", "2001:db8::1"), ("[::ffff:192.0.2.1]:80", "192.0.2.1")],
)
def test_an_address_with_a_port_is_the_address(raw, canonical):
    assert canonical_ip(raw) == canonical
    assert ip_limit_key(raw) == ip_limit_key(canonical)
