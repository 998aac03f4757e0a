"""The indexes every hot lookup relies on: each is used (no collection scan, on
SecantusDB as on mongod), and an index whose definition changed between releases is
replaced at start-up."""

from __future__ import annotations

import pytest
from pymongo import ASCENDING, IndexModel

from models.db import ensure_indexes
from tests.conftest import register


def winning_stages(plan: dict) -> list[str]:
    stages = [plan.get("stage", "")]
    if "inputStage" in plan:
        stages += winning_stages(plan["inputStage"])
    return stages


@pytest.mark.parametrize(
    "collection, query",
    [
        ("accounts", {"username_key": "someone"}),
        ("accounts", {"email_key": "someone@example.com"}),
        ("accounts", {"phone": "+14155550100"}),
        ("accounts", {"id": 7}),
        ("sessions", {"token_hash": "0" * 64}),
        ("sessions", {"changed_at": {"$gte": 0}}),
        ("accounts", {"changed_at": {"$gte": 0}}),
        # The search's forms (models/search.py).
        ("accounts", {"nickname_key": {"$gte": "дми", "$lt": "дми\uffff"}}),
        ("accounts", {"email_domain": {"$gte": "example.", "$lt": "example.\uffff"}}),
        ("accounts", {"phone_rev": {"$gte": "4310", "$lt": "4310\uffff"}}),
        ("accounts", {"uid": {"$gte": "3f2a", "$lt": "3f2a\uffff"}}),
        ("accounts", {"email_key": {"$gte": "ali", "$lt": "ali\uffff"}}),
        ("sessions", {"ip": {"$gte": "10.1.", "$lt": "10.1.\uffff"}}),
        ("events", {"ip": {"$gte": "10.1.", "$lt": "10.1.\uffff"}}),
    ],
)
async def test_hot_lookups_use_an_index(gatehouse, api, collection, query):
    await register(api)  # something in the collections, so a plan is real
    explained = await gatehouse.db[collection].find(query).explain()
    stages = winning_stages(explained["queryPlanner"]["winningPlan"])
    assert "COLLSCAN" not in stages and any(s in ("IXSCAN", "IDHACK", "EXPRESS_IXSCAN") for s in stages), stages


async def test_an_index_defined_differently_before_is_replaced(gatehouse, api):
    coll = gatehouse.db.accounts
    await coll.drop_index("username_key_unique")
    # The definition of earlier releases: partial, which plain equality queries skip.
    await coll.create_indexes(
        [
            IndexModel(
                [("username_key", ASCENDING)],
                unique=True,
                name="username_key_unique",
                partialFilterExpression={"username_key": {"$type": "string"}},
            )
        ]
    )
    await ensure_indexes(gatehouse.db)
    index = (await coll.index_information())["username_key_unique"]
    assert index.get("sparse") is True and "partialFilterExpression" not in index and index["unique"] is True
    # Still unique: a second account of that name is refused.
    user = await register(api)
    r = await api.post("/auth/register", {"username": user["username"].upper(), "password": "Another-pass-99"})
    assert r.status == 409, r.data
