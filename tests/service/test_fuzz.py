"""Property-based fuzzing of every operation in the app's own OpenAPI document.

For each operation (method and path) Hypothesis draws requests: path and query parameters from
their schemas, mixed with hostile text (control and bidi characters, long strings, invalid
percent-encoded UTF-8) and unknown parameters; bodies generated from the request schema, mixed
with arbitrary JSON and bytes that are not JSON; and a token among none, a made-up one, each
service scope and a viewer's own. The properties that must hold for every one of them:

- no 5xx: bad input is the client's problem and is answered as such;
- every 4xx carries the error shape ``{"error": {"code", "message", "details"}}`` and no stack
  trace.

The examples are bounded (``FUZZ_EXAMPLES`` per operation, derandomized, so a run is the same
on every machine) to keep the suite inside ``make test``: about 12 s for 25 operations at 60
examples each; ``REELRANK_FUZZ_EXAMPLES=500`` digs deeper.
"""

from __future__ import annotations

import json
import os
import tempfile
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reelrank.engine import Engine
from reelrank.service import Authenticator, create_app, ensure_service_keys
from reelrank.store import open_store
from tests.service.test_api import T0, make_item

FUZZ_EXAMPLES = int(os.environ.get("REELRANK_FUZZ_EXAMPLES", "60"))
KNOWN_IDS = ["u1", "u2", "v1", "v2", "v3", "c1", "s1", "e1"]
HOSTILE_TEXT = [" ", "", "\x00", "u\n1", "\t", "\r\n", "u\u202e1", "\u2066", "a" * 129,
                "a" * 5000, "%", "../../etc/passwd", "\ufffd", "用户", "null", "0", "-1",
                "1e309", "true", '{"a":1}', "' OR 1=1 --"]
INVALID_UTF8 = ["%FF%FE", "%C3", "%ED%A0%80", "%80"]


# -- the app under test -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """One app for the whole module (fuzzing many requests into one store is the point), with
    authentication on and a token of each kind."""
    data = tmp_path_factory.mktemp("fuzz")
    store = open_store(data / "data")
    engine = Engine(store).load()
    engine.ingest_items([make_item(i) for i in range(10)])
    keys = json.loads(ensure_service_keys(store, data / "keys").read_text())
    app = create_app(engine, Authenticator(store))
    with TestClient(app, raise_server_exceptions=False) as client:
        user = client.post("/v1/admin/users/u1/token",
                           headers={"Authorization": f"Bearer {keys['admin']}"}).json()["token"]
        tokens = [None, "made-up-token", keys["ingest"], keys["serve"], keys["admin"], user]
        yield client, app.openapi(), tokens
    store.close()


def _operations() -> list[tuple[str, str]]:
    # The document does not depend on the store: build it on a throwaway one.
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(tmp)
        try:
            doc = create_app(Engine(store).load(), None).openapi()
        finally:
            store.close()
    return sorted((method.upper(), path) for path, ops in doc["paths"].items() for method in ops)


OPERATIONS = _operations()


# -- strategies from the OpenAPI schemas ------------------------------------------------------
def _resolve(schema: dict, doc: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def _text(schema: dict, valid: bool) -> st.SearchStrategy:
    if valid:  # known item ids are valid ids of every kind, hashtags, regions and keywords
        return st.sampled_from(KNOWN_IDS[2:5])
    low = schema.get("minLength", 0)
    high = min(schema.get("maxLength", 40), 60)
    return st.one_of(st.sampled_from(KNOWN_IDS), st.sampled_from(HOSTILE_TEXT),
                     st.text(min_size=low, max_size=max(low, high)))


def _integer(schema: dict, valid: bool) -> st.SearchStrategy:
    low = schema.get("minimum", schema.get("exclusiveMinimum", -2**64))
    high = schema.get("maximum", schema.get("exclusiveMaximum", 2**64))
    if valid:  # a time when times are allowed, else a small count within the bounds
        if low <= T0 <= high:
            return st.just(T0)
        return st.integers(min_value=max(int(low), 1), max_value=min(int(high), 20))
    return st.one_of(st.sampled_from([T0, 0, 1, 10, -1, 2**63]),
                     st.integers(min_value=int(low), max_value=int(high)))


def from_schema(schema: dict, doc: dict, depth: int = 0,
                valid: bool = False) -> st.SearchStrategy:
    """Values for ``schema``: with ``valid``, values that fit it (so requests reach the code
    behind validation); otherwise values that often do not."""
    schema = _resolve(schema, doc)
    if depth > 4:
        return json_values
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, doc, depth + 1, valid) for s in schema[key]])
    if "allOf" in schema:
        return from_schema(schema["allOf"][0], doc, depth + 1, valid)
    kind = schema.get("type")
    if kind == "string":
        return _text(schema, valid)
    if kind == "integer":
        return _integer(schema, valid)
    if kind == "number":
        return st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                         _integer({}, valid))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        low = max(schema.get("minItems", 0), 1 if valid else 0)
        high = max(low, min(schema.get("maxItems", 5), 5))
        return st.lists(from_schema(schema.get("items", {}), doc, depth + 1, valid),
                        min_size=low, max_size=high)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, doc, depth + 1, valid) for k, v in props.items()
             if k in required},
            optional={k: from_schema(v, doc, depth + 1, valid) for k, v in props.items()
                      if k not in required})
    return json_values


def _encoded(value) -> str:
    return quote(str(value), safe="")


@st.composite
def requests_for(draw, doc: dict, method: str, path: str, tokens: list):
    op = doc["paths"][path][method.lower()]
    valid = draw(st.booleans())  # half the requests are well-formed, half are anything
    url = path
    query: list[str] = []
    for param in op.get("parameters", []):
        schema = param.get("schema", {})
        if param["in"] == "path":
            raw = draw(from_schema(schema, doc, valid=True).map(_encoded) if valid else
                       st.one_of(st.sampled_from(INVALID_UTF8),
                                 from_schema(schema, doc).map(_encoded)))
            url = url.replace("{" + param["name"] + "}", raw or "%20")
        elif param["in"] == "query":
            if not param.get("required") and draw(st.booleans()):
                continue
            raw = draw(from_schema(schema, doc, valid=True).map(_encoded) if valid else
                       st.one_of(st.sampled_from(INVALID_UTF8),
                                 from_schema(schema, doc).map(_encoded)))
            query.append(f"{param['name']}={raw}")
            if not valid and draw(st.integers(0, 9)) == 0:  # the same parameter twice
                query.append(f"{param['name']}={draw(from_schema(schema, doc).map(_encoded))}")
    if not valid and draw(st.integers(0, 4)) == 0:
        query.append(f"{draw(st.text(min_size=1, max_size=6).map(_encoded))}="
                     f"{draw(st.text(max_size=6).map(_encoded))}")
    if query:
        url += "?" + "&".join(query)
    headers = {}
    # Mostly tokens that reach the operation, so that more than the access check is fuzzed.
    token = draw(st.sampled_from(tokens[2:] + [tokens[4]] * 2) if valid else
                 st.sampled_from(tokens))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    content = None
    body = op.get("requestBody")
    if body is not None and valid:
        schema = body.get("content", {}).get("application/json", {}).get("schema", {})
        content = json.dumps(draw(from_schema(schema, doc, valid=True))).encode()
        headers["Content-Type"] = "application/json"
    elif body is not None or draw(st.integers(0, 9)) == 0:
        schema = (body or {}).get("content", {}).get("application/json", {}).get("schema", {})
        payload = draw(st.one_of(
            from_schema(schema, doc).map(lambda v: json.dumps(v).encode()),
            from_schema(schema, doc).map(lambda v: json.dumps(v).encode()),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=64)))
        content = payload
        headers["Content-Type"] = draw(st.sampled_from(
            ["application/json", "application/json", "text/plain",
             "application/x-www-form-urlencoded"]))
    return url, headers, content


# -- the property -----------------------------------------------------------------------------
@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_operation_answers_5xx_and_every_error_has_the_shape(target, method, path):
    client, doc, tokens = target

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=requests_for(doc, method, path, tokens))
    def check(request):
        url, headers, content = request
        r = client.request(method, url, headers=headers, content=content)
        where = f"{method} {url} -> {r.status_code}: {r.text[:300]}"
        assert r.status_code < 500, where
        if r.status_code >= 400:
            body = r.json()
            assert set(body) == {"error"}, where
            error = body["error"]
            assert isinstance(error["code"], str) and error["code"], where
            assert isinstance(error["message"], str) and error["message"], where
            assert isinstance(error["details"], list), where
            assert "Traceback" not in r.text, where

    check()


def test_the_fuzzer_covers_every_operation_of_the_document():
    # The list is read from the document, so a new route is fuzzed without anyone adding it.
    assert ("POST", "/v1/events") in OPERATIONS and ("GET", "/v1/feed") in OPERATIONS
    assert len(OPERATIONS) >= 20


def test_every_list_a_request_can_carry_is_bounded(target):
    """Ids per request are capped: every array in a request body or parameter declares
    ``maxItems`` (batches 10,000, rank 1,000, hidden creators and sounds 1,000, ...)."""
    _, doc, _ = target
    unbounded: list[str] = []

    def walk(schema: dict, where: str, seen: frozenset) -> None:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                walk(doc["components"]["schemas"][name], name, seen | {name})
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for inner in schema.get(key, ()):
                walk(inner, where, seen)
        if schema.get("type") == "array":
            if "maxItems" not in schema:
                unbounded.append(where)
            walk(schema.get("items", {}), where + "[]", seen)
        for name, inner in schema.get("properties", {}).items():
            walk(inner, f"{where}.{name}", seen)

    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", ()):
                walk(param.get("schema", {}), f"{method} {path} {param['name']}", frozenset())
            body = op.get("requestBody")
            if body:
                walk(body["content"]["application/json"]["schema"], f"{method} {path}",
                     frozenset())
    assert unbounded == []
