"""One id rule (reelrank/ids.py) for every id field of the API and for the importers."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.eval.simulator import build_world
from reelrank.ids import MAX_ID_LENGTH, id_problem
from reelrank.importers import DatasetFormatError, import_into
from reelrank.service import create_app
from reelrank.types import Event, Item
from tests.service.test_api import T0, assert_error, ev, make_item

BAD_IDS = {
    "space only": " ",
    "NUL": "a\x00b",
    "newline": "u\n1",
    "tab": "u\t1",
    "carriage return": "u1\r",
    "right-to-left override": "u\u202e1",
    "left-to-right isolate": "\u2066u1",
    "line separator": "u\u20281",
    "leading space": " u1",
    "trailing space": "u1 ",
    "ideographic space only": "\u3000",
    "too long": "u" * (MAX_ID_LENGTH + 1),
    "empty": "",
}
GOOD_IDS = ["u1", "viewer 42", "ça-va_ok.1", "用户", "👩\u200d👩\u200d👧", "x" * MAX_ID_LENGTH,
            "a:b/c@d"]


@pytest.mark.parametrize("name", BAD_IDS)
def test_the_rule_refuses(name):
    assert id_problem(BAD_IDS[name]) is not None


@pytest.mark.parametrize("value", GOOD_IDS)
def test_the_rule_accepts(value):
    assert id_problem(value) is None


def test_the_rule_refuses_lone_surrogates_and_non_strings():
    assert "control" in id_problem("a\ud800")
    assert id_problem(7) == "must be a string"


def test_every_id_of_the_demo_world_passes():
    world = build_world(n_users=60, n_items=200, seed=3)
    items = world.items
    ids = {i.item_id for i in items} | {i.creator_id for i in items}
    ids |= {i.sound_id for i in items if i.sound_id} | {u.user_id for u in world.users}
    assert ids and all(id_problem(i) is None for i in ids)


# -- the API ----------------------------------------------------------------------------------
@pytest.fixture
def api(store):
    engine = Engine(store).load()
    engine.ingest_items([make_item(i) for i in range(10)])
    with TestClient(create_app(engine, None)) as client:
        yield client


def _one_detail(r, field: str) -> str:
    err = assert_error(r, 422, "invalid_input")
    fields = [d["field"] for d in err["details"]]
    assert fields == [field], err
    return err["details"][0]["message"]


@pytest.mark.parametrize("name", BAD_IDS)
@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id"])
def test_events_refuse_bad_ids_naming_the_field(api, store, name, field):
    event = ev("e0", "u1", "v0")
    event[field] = BAD_IDS[name]
    r = api.post("/v1/events", json={"events": [ev("ok", "u1", "v1"), event]})
    message = _one_detail(r, f"events[1].{field}")
    assert message.startswith("an id ") or "character" in message
    assert store.count_events() == 0


@pytest.mark.parametrize("field", ["item_id", "creator_id", "sound_id"])
def test_items_refuse_bad_ids(api, store, field):
    item = {"item_id": "n1", "creator_id": "c1", "duration_ms": 1000, "created_at": T0}
    item[field] = "bad\u202eid"
    r = api.post("/v1/items", json={"items": [item]})
    assert "bidirectional" in _one_detail(r, f"items[0].{field}")
    assert store.count_items() == 10


@pytest.mark.parametrize("name", ["space only", "newline", "tab", "right-to-left override",
                                  "trailing space", "NUL"])
def test_query_and_path_ids_refuse_bad_ids(api, name):
    bad = BAD_IDS[name]
    _one_detail(api.get("/v1/feed", params={"user_id": bad}), "user_id")
    _one_detail(api.get("/v1/explain", params={"user_id": "u1", "item_id": bad}), "item_id")
    for method, path in (("GET", "/v1/users/{}/settings"), ("DELETE", "/v1/users/{}"),
                         ("POST", "/v1/users/{}/reset"), ("GET", "/v1/creators/{}/insights")):
        field = "creator_id" if "creators" in path else "user_id"
        _one_detail(api.request(method, path.format(_quoted(bad))), field)
    r = api.post("/v1/rank", json={"user_id": "u1", "item_ids": ["v1", bad]})
    _one_detail(r, "item_ids[1]")


def test_a_lone_surrogate_in_json_is_422(api, store):
    body = json.dumps({"events": [ev("e0", "u1", "v0")]}).replace('"u1"', '"u\\ud800"')
    r = api.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    _one_detail(r, "events[0].user_id")  # pydantic refuses it before the id rule does
    assert store.count_events() == 0


def test_a_hostile_but_valid_id_round_trips(api):
    user = "o'brien \"quoted\" 用户 é"
    r = api.post("/v1/events", json={"events": [ev("e0", user, "v0")]})
    assert r.status_code == 200, r.text
    assert api.get("/v1/feed", params={"user_id": user}).json()["user_id"] == user
    assert api.delete(f"/v1/users/{_quoted(user)}").status_code == 204


def _quoted(value: str) -> str:
    from urllib.parse import quote
    return quote(value, safe="")


# -- importers --------------------------------------------------------------------------------
def test_an_import_with_a_bad_id_names_it_and_stores_nothing_of_its_batch(store):
    items = [Item(item_id="v1", creator_id="c1", duration_ms=1000, created_at=0),
             Item(item_id="v2", creator_id="c\t2", duration_ms=1000, created_at=0)]
    with pytest.raises(DatasetFormatError, match=r"item 1 .*creator_id.*control"):
        import_into(store, items, [], progress=False)
    assert store.count_items() == 0
    good = items[:1]
    events = [Event(event_id="e1", user_id="u1", item_id="v1", ts=1, type="play"),
              Event(event_id="e2", user_id="u\u202e1", item_id="v1", ts=2, type="play")]
    with pytest.raises(DatasetFormatError, match=r"event 1 .*user_id.*bidirectional"):
        import_into(store, good, events, progress=False)
    assert store.count_events() == 0
