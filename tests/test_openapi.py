"""/openapi.json: valid OpenAPI 3.1, complete, and following the enabled styles.

That it matches what the server really answers is checked on every request of the
whole suite (`tests/openapi_check.py`); `scripts/test` also fails when some documented
success answer was never seen by any test.
"""

from __future__ import annotations

import json
import re

import pytest
from openapi_spec_validator import validate
from tornado.web import RequestHandler

from handlers import openapi
from handlers.routing import routes


async def served_spec(api) -> dict:
    r = await api.get("/openapi.json")
    assert r.status == 200
    return r.data


async def test_the_spec_is_valid_openapi_and_every_reference_resolves(api):
    spec = await served_spec(api)
    validate(spec)  # raises on an invalid document
    assert spec["openapi"] == "3.1.0"
    text = json.dumps(spec)
    for name in re.findall(r'"#/components/schemas/([^"]+)"', text):
        assert name in spec["components"]["schemas"], name


async def test_every_route_of_the_app_is_described(api, config):
    spec = await served_spec(api)
    for route in routes(config):
        assert route.path in spec["paths"], route.path
        item = spec["paths"][route.path]
        for method in ("get", "post", "put", "patch", "delete"):
            if getattr(route.handler, method) is not getattr(RequestHandler, method):
                assert method in item, f"{method} {route.path} is served but not described"
        for op in item.values():
            assert op["responses"], route.path
            assert "503" in op["responses"], "every operation can meet a database outage"


async def test_authenticated_operations_say_so_and_list_their_auth_errors(api):
    spec = await served_spec(api)
    me = spec["paths"]["/auth/me"]["get"]
    assert me["security"] == [{"bearer": []}, {"token": []}]  # `Bearer <token>`, or raw as document 003 shows
    assert {"401", "403"} <= set(me["responses"])
    assert spec["paths"]["/auth/introspect"]["post"]["security"] == [{"serviceKey": []}]
    assert {"serviceKey": []} in spec["paths"]["/admin/api/stats"]["get"]["security"]
    login = spec["paths"]["/auth/auth"]["post"]
    assert login["security"] == []  # anonymous, said outright (linters and generated clients read it)
    body = login["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["username", "password"]
    assert body["properties"]["password"]["maxLength"] == 4096


async def test_what_the_linters_ask_for_is_there(api):
    """scripts/test lints the document with Redocly and Spectral; these are the points
    they failed on before, kept here so a change shows up in the Python tests too."""
    spec = await served_spec(api)
    assert spec["servers"] == [{"url": "/", "description": "This server"}]
    assert spec["info"]["license"]["name"]
    declared = {t["name"] for t in spec["tags"]}
    schemes = set(spec["components"]["securitySchemes"])
    ids = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert set(op["tags"]) <= declared, (method, path)
            assert "security" in op, (method, path)
            assert all(set(requirement) <= schemes for requirement in op["security"]), (method, path)
            ids.append(op["operationId"])
    assert len(ids) == len(set(ids))
    assert all(t["description"] for t in spec["tags"])


async def test_the_linted_document_is_the_served_one(api, tmp_path):
    """`python -m handlers.openapi` (what scripts/lint-openapi lints) writes, without a
    server, the document a server with every style and the test routes serves."""
    spec = await served_spec(api)
    out = tmp_path / "openapi.json"
    assert openapi.main([str(out)]) == 0
    assert json.loads(out.read_text()) == spec


@pytest.mark.parametrize("settings", [{"api_styles": ("native", "v1")}])
async def test_a_disabled_style_is_not_described(settings, api):
    spec = await served_spec(api)
    assert "/api/v1/auth/login" in spec["paths"]
    assert "/auth/auth" in spec["paths"]
    assert not any(p.startswith(("/api/auth/", "/auth/api/", "/auth/create")) for p in spec["paths"])
    # Without document 002, /auth/reset is document 003's alone, with the native envelope.
    reset = spec["paths"]["/auth/reset"]["post"]
    assert reset["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("NativeHandler")


async def test_the_checker_itself_refuses_an_answer_the_spec_does_not_allow(api):
    """The per-request check is what holds the spec to reality; make sure it can fail."""
    await served_spec(api)
    with pytest.raises(AssertionError, match="does not match"):
        api.spec.check("GET", "/healthz", 200, {"status": "ok", "extra": 1})
    with pytest.raises(AssertionError, match="not in /openapi.json"):
        api.spec.check("GET", "/healthz", 418, {})
    with pytest.raises(AssertionError, match="not in /openapi.json"):
        api.spec.check("GET", "/nowhere", 200, {})
