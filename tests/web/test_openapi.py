"""GET /openapi.json (web/openapi.py) is a well-formed OpenAPI 3.1 document that tells the
truth: it documents exactly the app's routes, and real responses of every endpoint validate
against the schema and headers documented for their status code."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.testclient import TestClient

from tests.conftest import ISSUER
from tests.web.conftest import shared_runtime_fixtures
from tests.web.helpers import (
    FORM,
    INTROSPECT,
    JSON,
    REVOKE,
    TOKEN,
    TOKEN_SLASH,
    USERINFO,
    bearer,
    refresh,
    unreachable_engines,
)
from tokend.core.errors import InvalidRequest, TemporarilyUnavailable
from tokend.core.secrets import new_refresh_token
from tokend.web.app import create_app
from tokend.web.parsing import MAX_FIELDS, parse_params

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
BASE = "urn:tokend:openapi"


# One runtime per backend for this module's many independent cases (conftest.shared_rt).
rt, http, settings, clock = shared_runtime_fixtures()


@pytest.fixture(scope="module")
def doc(http) -> dict[str, Any]:
    r = http.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == JSON
    return r.json()


@pytest.fixture(scope="module")
def registry(doc) -> Registry:
    return Registry().with_resource(BASE, Resource(contents=doc, specification=DRAFT202012))


def _absolute_refs(schema: Any) -> Any:
    """Point the document's local ``#/...`` references at the registered document."""
    if isinstance(schema, dict):
        return {
            k: (BASE + v if k == "$ref" and v.startswith("#") else _absolute_refs(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_absolute_refs(v) for v in schema]
    return schema


def _validator(schema: dict[str, Any], registry: Registry) -> Draft202012Validator:
    return Draft202012Validator(_absolute_refs(schema), registry=registry)


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def assert_documented(
    doc: dict[str, Any], registry: Registry, path: str, r: httpx.Response
) -> None:
    """``r`` (a response to ``path``) matches what the document says for its status."""
    method = r.request.method.lower()
    op = doc["paths"][path][method]
    status = str(r.status_code)
    assert status in op["responses"], f"{method.upper()} {path} -> {status} is not documented"
    documented = op["responses"][status]
    if "content" not in documented:  # documented without a body (e.g. RFC 7009's 200)
        assert r.content == b"", f"{method.upper()} {path} -> {status} has an undocumented body"
        assert "content-type" not in r.headers, r.headers
    else:
        media = r.headers["content-type"].split(";")[0].strip()
        assert media in documented["content"], (media, list(documented["content"]))
        schema = documented["content"][media]["schema"]
        body = r.json() if media.endswith("json") else r.text  # text/plain: /metrics
        errors = list(_validator(schema, registry).iter_errors(body))
        assert not errors, [e.message for e in errors]
    for name, header in documented.get("headers", {}).items():
        if header.get("required") is False and name.lower() not in r.headers:
            continue  # documented as optional (DPoP-Nonce): checked when it is there
        assert name.lower() in r.headers, f"documented header {name} missing on {status}"
        header_errors = list(_validator(header["schema"], registry).iter_errors(r.headers[name]))
        assert not header_errors, (name, [e.message for e in header_errors])


# -- the document itself -------------------------------------------------------------------


def test_is_openapi_3_1(doc, rt) -> None:
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert isinstance(doc["info"]["title"], str) and doc["info"]["title"]
    assert isinstance(doc["info"]["version"], str) and doc["info"]["version"]
    assert doc["servers"] == [{"url": rt.settings.issuer}]
    assert set(doc) <= {
        "openapi", "info", "jsonSchemaDialect", "servers", "paths", "webhooks", "components",
        "security", "tags", "externalDocs",
    }  # fmt: skip


def test_paths_and_operations_are_well_formed(doc) -> None:
    operation_ids = []
    for path, item in doc["paths"].items():
        assert path.startswith("/")
        assert set(item) <= HTTP_METHODS | {"summary", "description", "parameters", "servers"}
    for path, method, op in _operations(doc):
        where = f"{method.upper()} {path}"
        operation_ids.append(op["operationId"])
        assert op["responses"], where
        for status, response in op["responses"].items():
            assert re.fullmatch(r"[1-5](\d\d|XX)|default", status), (where, status)
            assert isinstance(response["description"], str), (where, status)
            for media, content in response.get("content", {}).items():
                assert re.fullmatch(r"[\w.+-]+/[\w.+-]+", media), (where, media)
                assert "schema" in content, (where, status, media)
            for name, header in response.get("headers", {}).items():
                assert "schema" in header, (where, status, name)
        for requirement in op.get("security", []):
            for scheme in requirement:
                assert scheme in doc["components"]["securitySchemes"], (where, scheme)
        if "requestBody" in op:
            assert op["requestBody"]["content"], where
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"


def test_every_schema_is_valid_json_schema_2020_12(doc) -> None:
    schemas = [v for k, v in _walk(doc) if k == "schema"]
    schemas += list(doc["components"]["schemas"].values())
    assert len(schemas) > 10
    for schema in schemas:
        Draft202012Validator.check_schema(schema)


def test_every_ref_resolves(doc, registry) -> None:
    refs = {v for k, v in _walk(doc) if k == "$ref"}
    assert refs
    resolver = registry.resolver(BASE)
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        resolver.lookup(BASE + ref)  # raises if it does not resolve


def test_documents_exactly_the_apps_routes(doc, http) -> None:
    served = {
        (route.path, method.lower())
        for route in http.app.routes
        for method in (route.methods or ())
        if method != "HEAD"
    }
    documented = {(path, method) for path, method, _ in _operations(doc)}
    assert served, "no routes found"
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


def test_documented_grant_types_are_the_services(doc, rt) -> None:
    for path in (TOKEN, TOKEN_SLASH):
        body = doc["paths"][path]["post"]["requestBody"]["content"]
        for media in (FORM, JSON):
            grants = [
                g["properties"]["grant_type"]["const"] for g in body[media]["schema"]["oneOf"]
            ]
            assert sorted(grants) == sorted(rt.service.grant_types)


# -- real responses against the document ---------------------------------------------------


@pytest.fixture
def tokens(make_client, issue):
    reg = make_client()
    return reg, issue(reg, "openid offline email").refresh_token


@pytest.mark.parametrize("path", [TOKEN, TOKEN_SLASH])
def test_token_success_matches_document(doc, registry, http, tokens, path) -> None:
    reg, token = tokens
    params = refresh(token)
    for media in (FORM, JSON):
        request_schema = doc["paths"][path]["post"]["requestBody"]["content"][media]["schema"]
        assert not list(_validator(request_schema, registry).iter_errors(params))
    r = http.post(path, data=params, auth=reg.basic)
    assert r.status_code == 200, r.text
    assert_documented(doc, registry, path, r)
    # The refreshed response again, now as JSON request with a narrowed scope (no id_token).
    r = http.post(
        path,
        content=json.dumps(refresh(r.json()["refresh_token"], scope="offline")),
        headers={"Content-Type": JSON},
        auth=reg.basic,
    )
    assert r.status_code == 200, r.text
    assert "id_token" not in r.json()
    assert_documented(doc, registry, path, r)


def test_client_credentials_success_matches_document(doc, registry, http, make_client) -> None:
    reg = make_client()
    r = http.post(TOKEN, data={"grant_type": "client_credentials"}, auth=reg.basic)
    assert r.status_code == 200, r.text
    assert_documented(doc, registry, TOKEN, r)


ERROR_REQUESTS = {
    "invalid_request": lambda reg, tok: {"data": {"refresh_token": tok}, "auth": reg.basic},
    "invalid_client": lambda reg, tok: {"data": refresh(tok), "auth": (reg.client_id, "nope")},
    "invalid_grant": lambda reg, tok: {"data": refresh(tok[:-1]), "auth": reg.basic},
    "unsupported_grant_type": lambda reg, tok: {"data": {"grant_type": "x"}, "auth": reg.basic},
    "invalid_scope": lambda reg, tok: {"data": refresh(tok, scope="admin"), "auth": reg.basic},
    "bad_content_type": lambda reg, tok: {
        "content": b"x",
        "headers": {"Content-Type": "text/plain"},
    },
    "bad_json": lambda reg, tok: {"content": b"[", "headers": {"Content-Type": JSON}},
    "too_large": lambda reg, tok: {"data": refresh(tok, pad="x" * 20_000), "auth": reg.basic},
}


@pytest.mark.parametrize("case", ERROR_REQUESTS)
def test_token_errors_match_document(doc, registry, http, tokens, case) -> None:
    reg, token = tokens
    r = http.post(TOKEN, **ERROR_REQUESTS[case](reg, token))
    assert 400 <= r.status_code < 500, r.text
    assert_documented(doc, registry, TOKEN, r)


def test_unauthorized_client_matches_document(doc, registry, http, make_client, issue) -> None:
    reg = make_client(grant_types=("client_credentials",))
    other = make_client()
    r = http.post(TOKEN, data=refresh(issue(other).refresh_token), auth=reg.basic)
    assert r.json()["error"] == "unauthorized_client"
    assert_documented(doc, registry, TOKEN, r)


def test_server_errors_match_document(doc, registry, http, tokens, rt, monkeypatch) -> None:
    reg, token = tokens

    def boom(client_id: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(rt.store, "get_client", boom)
    r = http.post(TOKEN, data=refresh(token), auth=reg.basic)
    assert r.status_code == 500
    assert_documented(doc, registry, TOKEN, r)

    def busy(client_id: str) -> None:
        raise TemporarilyUnavailable()

    monkeypatch.setattr(rt.store, "get_client", busy)
    r = http.post(TOKEN, data=refresh(token), auth=reg.basic)
    assert r.status_code == 503
    assert_documented(doc, registry, TOKEN, r)


@pytest.mark.parametrize(
    "path",
    ["/auth/jwks", "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server",
     "/healthz", "/healthz/live", "/openapi.json", "/metrics"],
)  # fmt: skip
def test_get_endpoints_match_document(doc, registry, http, path) -> None:
    r = http.get(path)
    assert r.status_code == 200
    assert_documented(doc, registry, path, r)


def test_metrics_refusal_matches_document(doc, registry, rt) -> None:
    settings = rt.settings.model_copy(update={"metrics_token": "m" * 32})
    # No lifespan (no `with`): its end would close the module's shared runtime.
    r = TestClient(create_app(settings, runtime=rt), base_url=ISSUER).get("/metrics")
    assert r.status_code == 401
    assert_documented(doc, registry, "/metrics", r)


def test_healthz_unavailable_matches_document(doc, registry, http, rt, monkeypatch, tmp_path):
    engines = unreachable_engines(rt, tmp_path)
    monkeypatch.setattr(rt.store, "engines", engines)
    try:
        r = http.get("/healthz")
        live = http.get("/healthz/live")
    finally:
        engines.close()
    assert r.status_code == 503
    assert_documented(doc, registry, "/healthz", r)
    assert live.status_code == 200
    assert_documented(doc, registry, "/healthz/live", live)


def test_validation_is_not_vacuous(doc, registry) -> None:
    """The helpers above really reject a response that breaks the document."""
    wrong = httpx.Response(
        400,
        json={"error": "invalid_request", "error_description": "x", "extra": 1},
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        request=httpx.Request("POST", "https://issuer.test" + TOKEN),
    )
    with pytest.raises(AssertionError):
        assert_documented(doc, registry, TOKEN, wrong)
    no_headers = httpx.Response(
        400,
        json={"error": "invalid_request", "error_description": "x"},
        request=httpx.Request("POST", "https://issuer.test" + TOKEN),
    )
    with pytest.raises(AssertionError, match="documented header"):
        assert_documented(doc, registry, TOKEN, no_headers)
    undocumented = httpx.Response(
        418, json={}, request=httpx.Request("GET", "https://issuer.test/healthz")
    )
    with pytest.raises(AssertionError, match="not documented"):
        assert_documented(doc, registry, "/healthz", undocumented)


# -- the UserInfo endpoint -----------------------------------------------------------------


def test_userinfo_responses_match_document(
    doc, registry, http, rt, make_client, issue, user
) -> None:
    reg = make_client(scopes="openid offline email profile phone")
    profile = {
        "email": "a@example.com",
        "given_name": "A",
        "family_name": "B",
        "phone_number": "+1555",
        "picture": "https://p.example/a",
    }
    rt.store.update_user(user.username, profile, now=rt.clock.now())
    full = issue(reg, "openid email profile phone").access_token
    no_openid = issue(reg, "email").access_token
    cases = [
        (200, "GET", {"headers": bearer(full)}),
        (200, "POST", {"data": {"access_token": full}}),
        (200, "GET", {"headers": bearer(issue(reg, "openid").access_token)}),
        (401, "GET", {}),
        (401, "POST", {"headers": bearer(full[:-2])}),
        (401, "GET", {"headers": bearer("not.a.token")}),
        (403, "GET", {"headers": bearer(no_openid)}),
        (403, "POST", {"data": {"access_token": no_openid}}),
        (400, "GET", {"params": {"access_token": full}}),
        (413, "POST", {"data": {"access_token": "x" * 20_000}}),
    ]
    for status, method, kwargs in cases:
        r = http.request(method, USERINFO, **kwargs)
        assert r.status_code == status, (status, method, r.text)
        assert_documented(doc, registry, USERINFO, r)
    # The full response used every documented member.
    body = http.get(USERINFO, headers=bearer(full)).json()
    assert set(body) == set(doc["components"]["schemas"]["UserInfo"]["properties"])


def test_userinfo_unavailable_matches_document(
    doc, registry, http, make_client, issue, rt, monkeypatch
) -> None:
    token = issue(make_client()).access_token

    def busy(family_id: str) -> None:
        raise TemporarilyUnavailable()

    monkeypatch.setattr(rt.store, "get_family_and_user", busy)
    r = http.get(USERINFO, headers=bearer(token))
    assert r.status_code == 503
    assert_documented(doc, registry, USERINFO, r)


# -- revocation (RFC 7009) and introspection (RFC 7662) ------------------------------------


def test_revocation_and_introspection_responses_match_document(
    doc, registry, http, rt, make_client, issue, monkeypatch
) -> None:
    reg = make_client()
    public = make_client(public=True)
    tokens = issue(reg, "openid offline")
    cc = http.post(TOKEN, data={"grant_type": "client_credentials"}, auth=reg.basic).json()
    bound = rt.keys.sign_access_token(
        {**jwt.decode(tokens.access_token, options={"verify_signature": False}),
         "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}
    )  # fmt: skip
    introspections = [
        (200, {"data": {"token": tokens.access_token}, "auth": reg.basic}, "Bearer"),
        (200, {"data": {"token": tokens.refresh_token}, "auth": reg.basic}, "refresh_token"),
        (200, {"data": {"token": cc["access_token"]}, "auth": reg.basic}, "Bearer"),
        (200, {"data": {"token": bound}, "auth": reg.basic}, "DPoP"),
        (200, {"data": {"token": "nonsense"}, "auth": reg.basic}, None),
        (400, {"data": {}, "auth": reg.basic}, None),
        (401, {"data": {"token": "x", "client_id": public.client_id}}, None),
        (401, {"data": {"token": "x"}, "auth": (reg.client_id, "wrong")}, None),
        (413, {"data": {"token": "x" * 20_000}, "auth": reg.basic}, None),
    ]
    for status, kwargs, token_type in introspections:
        r = http.post(INTROSPECT, **kwargs)
        assert r.status_code == status, (status, r.text)
        assert_documented(doc, registry, INTROSPECT, r)
        if status == 200:
            assert r.json().get("token_type") == token_type
    revocations = [
        (200, {"data": {"token": tokens.access_token}, "auth": reg.basic}),
        (200, {"data": {"token": "nonsense", "client_id": public.client_id}}),
        (200, {"data": {"token": tokens.refresh_token}, "auth": reg.basic}),
        (400, {"data": {"token_type_hint": "access_token"}, "auth": reg.basic}),
        (400, {"content": b"{", "headers": {"Content-Type": JSON}, "auth": reg.basic}),
        (401, {"data": {"token": "x"}}),
        (413, {"data": {"token": "x" * 20_000}, "auth": reg.basic}),
    ]
    for status, kwargs in revocations:
        r = http.post(REVOKE, **kwargs)
        assert r.status_code == status, (status, r.text)
        assert_documented(doc, registry, REVOKE, r)

    def busy(*args: object) -> None:
        raise TemporarilyUnavailable()

    def boom(*args: object) -> None:
        raise RuntimeError("boom")

    for fault, status in ((busy, 503), (boom, 500)):
        monkeypatch.setattr(rt.store, "peek_refresh_token", fault)
        for path in (INTROSPECT, REVOKE):
            r = http.post(path, data={"token": new_refresh_token()}, auth=reg.basic)
            assert r.status_code == status
            assert_documented(doc, registry, path, r)


def test_revocation_and_introspection_validation_is_not_vacuous(doc, registry) -> None:
    """A body on RFC 7009's empty 200, or more than ``active`` on an inactive token, breaks
    the document."""
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    with_body = httpx.Response(
        200, json={}, headers=headers, request=httpx.Request("POST", "https://i.test" + REVOKE)
    )
    with pytest.raises(AssertionError, match="undocumented body"):
        assert_documented(doc, registry, REVOKE, with_body)
    for body in ({"active": False, "sub": "x"}, {"active": True}, {"active": "false"}):
        telling = httpx.Response(
            200, json=body, headers=headers,
            request=httpx.Request("POST", "https://i.test" + INTROSPECT),
        )  # fmt: skip
        with pytest.raises(AssertionError):
            assert_documented(doc, registry, INTROSPECT, telling)


# -- the request schemas are exact: they admit what the parsers admit -----------------------

TEXT_RULE = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f\\ufffe\\uffff]*$"
BODIES = {  # operation -> (a valid body, its required parameters)
    (TOKEN, "post"): ({"grant_type": "refresh_token", "refresh_token": "r"}, ["refresh_token"]),
    (TOKEN_SLASH, "post"): ({"grant_type": "client_credentials", "scope": "a b"}, []),
    (REVOKE, "post"): ({"token": "t", "token_type_hint": "refresh_token"}, ["token"]),
    (INTROSPECT, "post"): ({"token": "t"}, ["token"]),
    (USERINFO, "post"): ({"access_token": "a"}, []),
}
# Changes to a valid body, each on its own.
BODY_CHANGES = {
    "unknown parameter (ignored, RFC 6749 §3.2)": lambda b, req: {**b, "extra": "x"},
    "non-ASCII text": lambda b, req: {**b, "client_id": "ünï\tcødé 😀"},
    "empty optional (omitted)": lambda b, req: {**b, "client_id": ""},
    "empty required": lambda b, req: {**b, **dict.fromkeys(req[:1], "")},
    "NUL in a value": lambda b, req: {**b, "client_id": "a\x00b"},
    "newline in a value": lambda b, req: {**b, "client_id": "a\nb"},
    "DEL in a value": lambda b, req: {**b, "client_id": "a\x7f"},
    "U+FFFF in a value": lambda b, req: {**b, "client_id": "a\uffff"},
    "control character in a name": lambda b, req: {**b, "x\x01": "y"},
    "64 parameters": lambda b, req: {**b, **{f"p{i}": "v" for i in range(64 - len(b))}},
    "65 parameters": lambda b, req: {**b, **{f"p{i}": "v" for i in range(65 - len(b))}},
}
JSON_CHANGES = {
    "null optional (omitted)": lambda b, req: {**b, "client_id": None},
    "number": lambda b, req: {**b, "client_id": 1},
    "object": lambda b, req: {**b, "extra": {"a": "b"}},
    "array": lambda b, req: {**b, "extra": ["a"]},
    "boolean": lambda b, req: {**b, "extra": True},
}


def _parser_accepts(media: str, body: dict[str, Any], required: list[str]) -> bool:
    """Whether web/parsing.py takes the body, with every required parameter in it."""
    raw = json.dumps(body).encode() if media == JSON else urlencode(body).encode()
    try:
        params = parse_params(media, raw)
    except InvalidRequest:
        return False
    return all(params.get(name) for name in required)


@pytest.mark.parametrize(("path", "method"), list(BODIES))
def test_request_schemas_admit_what_the_parsers_admit(doc, path, method) -> None:
    """For every body the document describes, a change that the parser refuses (or that
    leaves out a required parameter) is one the schema refuses, and a change it accepts is
    one the schema admits: a fuzzer driven by the document gets past input parsing."""
    base, required = BODIES[(path, method)]
    content = doc["paths"][path][method]["requestBody"]["content"]
    for media, media_doc in content.items():
        validator = Draft202012Validator(media_doc["schema"])
        changes = {**BODY_CHANGES, **(JSON_CHANGES if media == JSON else {})}
        assert validator.is_valid(base), (path, media)
        for name, change in changes.items():
            body = change(base, required)
            by_document = validator.is_valid(body)
            by_parser = _parser_accepts(media, body, required)
            assert by_document == by_parser, (path, media, name, by_document, by_parser)


def test_request_parameters_are_text_and_required_ones_non_empty(doc) -> None:
    """Every string parameter the document describes has a pattern (the text rule or a
    narrower one) or an enum, and a required one cannot be empty."""
    checked = 0
    for path, method, op in _operations(doc):
        for param in op.get("parameters", []):
            schema = param["schema"]
            assert "pattern" in schema or "enum" in schema, (path, method, param["name"])
            if param["required"]:
                assert not Draft202012Validator(schema).is_valid(""), (path, param["name"])
            checked += 1
        for media, content in op.get("requestBody", {}).get("content", {}).items():
            schema = content["schema"]
            for variant in schema.get("oneOf", [schema]):
                assert variant["propertyNames"] == {"pattern": TEXT_RULE}, (path, media)
                assert variant["maxProperties"] == MAX_FIELDS, (path, media)
                for name, prop in variant["properties"].items():
                    for alt in prop.get("oneOf", [prop]):
                        if alt.get("type") == "string":
                            assert "pattern" in alt or "enum" in alt or "const" in alt, name
                    if name in variant["required"]:
                        assert not Draft202012Validator(prop).is_valid(""), (path, name)
                    checked += 1
    assert checked > 50


def test_throttling_is_documented(doc) -> None:
    """429 with Retry-After where failed authentication is throttled (issue 10 §2): the
    client-authenticating endpoints (JSON error) and the sign-in form (a page)."""
    for path in (TOKEN, TOKEN_SLASH, REVOKE, INTROSPECT):
        response = doc["paths"][path]["post"]["responses"]["429"]
        assert "Retry-After" in response["headers"], path
        schema = response["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ThrottleError"}
    login = doc["paths"]["/auth/v2/authorize/login"]["post"]["responses"]["429"]
    assert "Retry-After" in login["headers"] and "text/html" in login["content"]
    throttle = doc["components"]["schemas"]["ThrottleError"]
    assert set(throttle["required"]) == {"error", "error_description"}
    assert doc["components"]["schemas"]["Error"]["required"] == ["error", "error_description"]
