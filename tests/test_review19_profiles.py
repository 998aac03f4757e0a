"""Review of issue 19: one GATEHOUSE_JWT_SECRET is shared by every legacy style, so each
legacy back end must refuse the other styles' tokens, above all their refresh tokens as
access tokens (a refresh token lives far longer than an access token)."""

from __future__ import annotations

import asyncio

import pytest

from tests.test_legacy_backends import SHARED, claims_of, drf_pair, flask_app, flask_calls

pytestmark = pytest.mark.parametrize("settings", [SHARED])


async def test_flask_jwt_extended_refuses_a_drf_refresh_token_as_an_access_token(sinks, api, settings):
    access, refresh = await drf_pair(api, sinks)
    assert claims_of(refresh)["typ"] == "refresh" and "type" not in claims_of(refresh)
    (status, body), _ = await asyncio.to_thread(flask_calls, flask_app(), refresh)
    # flask-jwt-extended reads a token without `type` as an access token: a drf refresh
    # token (lifetime: the drf refresh lifetime) opens the phone back end's @jwt_required().
    assert status != 200, body


async def test_flask_jwt_extended_refuses_a_drf_access_token(sinks, api, settings):
    access, _ = await drf_pair(api, sinks)
    (status, body), _ = await asyncio.to_thread(flask_calls, flask_app(), access)
    assert status != 200, body
