"""Properties of the authorization request (tokend.core.authorization.validate, RFC 6749
§4.1.1, OIDC Core §3.1.2.1), for any list of query parameters:

- the outcome is an ``AuthorizationRequest``, a ``FatalAuthorizationError`` (our own error
  page) or a ``RedirectableError`` (back to the client), never another exception;
- an error is only ever sent to a redirect URI registered for the client;
- a repeated parameter (RFC 6749 §3.1: "MUST NOT be included more than once"), an empty
  repeat included, is never accepted;
- what is accepted is within the client's registration and RFC 6749 Appendix A's text;
- a well-formed request round-trips into the request the client meant."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import NOT_TEXT, hostile_text, nonempty_text, text, text_char
from tokend.core import authorization as authz
from tokend.core.models import Client
from tokend.core.pkce import s256

CLIENT_ID = "client-1"
PUBLIC_ID = "public-1"
REDIRECTS = ("https://app.example/cb", "https://app.example/cb?x=1", "com.example.app:/cb")
SCOPES = ("openid", "offline", "email", "profile")
GRANTS = frozenset({"authorization_code", "refresh_token"})
CLIENTS = {
    CLIENT_ID: Client(CLIENT_ID, "c", False, b"h", GRANTS, REDIRECTS, SCOPES),
    PUBLIC_ID: Client(PUBLIC_ID, "p", True, None, GRANTS, REDIRECTS, SCOPES),
    "cc-only": Client("cc-only", "cc", False, b"h", frozenset({"client_credentials"}),
                      REDIRECTS, SCOPES),
}  # fmt: skip
ERRORS = {
    "invalid_request",
    "unsupported_response_type",
    "unauthorized_client",
    "invalid_scope",
    "request_not_supported",
    "request_uri_not_supported",
}
NAMES = [
    "response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge",
    "code_challenge_method", "prompt", "max_age", "request", "request_uri", "login_hint",
]  # fmt: skip
CHALLENGE = s256("v" * 43)

values = st.one_of(
    hostile_text,
    st.sampled_from(
        ["code", "token", "", CLIENT_ID, PUBLIC_ID, "cc-only", *REDIRECTS, "openid",
         "openid offline email", "openid admin", "S256", "plain", CHALLENGE, "none", "login",
         "none login", "consent select_account", "0", "60", "-1", "12345678901", "x" * 513]
    ),
)  # fmt: skip
pairs = st.lists(st.tuples(st.one_of(st.sampled_from(NAMES), hostile_text), values), max_size=12)


def run(query: list[tuple[str, str]]) -> Any:
    try:
        return authz.validate(query, CLIENTS.get)
    except (authz.FatalAuthorizationError, authz.RedirectableError) as exc:
        return exc


def is_text(value: str | None) -> bool:
    return value is None or not any(c in value for c in NOT_TEXT)


@given(pairs)
def test_any_query(query: list[tuple[str, str]]) -> None:
    result = run(query)
    if isinstance(result, authz.FatalAuthorizationError):
        assert result.description
        return
    names = [n for n, _ in query]
    given_ = {n: v for n, v in query if v != ""}
    client = CLIENTS[given_["client_id"]]
    if isinstance(result, authz.RedirectableError):
        assert result.redirect_uri in client.redirect_uris
        assert result.redirect_uri == given_["redirect_uri"]
        assert result.error in ERRORS and result.description
        assert result.state in (None, given_.get("state"))
        return
    assert isinstance(result, authz.AuthorizationRequest)
    assert len(names) == len(set(names)), f"a repeated parameter was accepted: {query!r}"
    assert result.client is client
    assert result.redirect_uri in client.redirect_uris
    assert "openid" in result.scopes and set(result.scopes) <= set(client.scopes)
    assert given_["response_type"] == "code"
    assert result.state == given_.get("state") and result.nonce == given_.get("nonce")
    assert client.public <= (result.code_challenge is not None)
    for value in (result.state, result.nonce, result.code_challenge):
        assert is_text(value), f"a control character was accepted: {value!r}"


def valid_request(client_id: str) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries(
        {
            "response_type": st.just("code"),
            "client_id": st.just(client_id),
            "redirect_uri": st.sampled_from(REDIRECTS),
            "scope": st.lists(st.sampled_from(SCOPES[1:]), unique=True).flatmap(
                lambda rest: st.permutations(["openid", *rest]).map(" ".join)
            ),
            "code_challenge": st.text(
                st.sampled_from("abcdefghijklmnopqrstuvwxyzABC0123456789-._~"),
                min_size=43,
                max_size=128,
            ),
            "code_challenge_method": st.just("S256"),
        },
        optional={
            "state": nonempty_text,
            "nonce": st.text(text_char, min_size=1, max_size=512),
            "prompt": st.sampled_from(["none", "login", "consent", "login consent"]),
            "max_age": st.integers(0, 9_999_999_999).map(str),
            "login_hint": text,
            "ui_locales": text,
        },
    )


@given(st.sampled_from([CLIENT_ID, PUBLIC_ID]).flatmap(valid_request), st.randoms())
def test_well_formed_request_round_trips(params: dict[str, str], rnd: Any) -> None:
    query = list(params.items())
    rnd.shuffle(query)
    result = run(query)
    assert isinstance(result, authz.AuthorizationRequest), result
    assert result.client.client_id == params["client_id"]
    assert result.redirect_uri == params["redirect_uri"]
    assert " ".join(result.scopes) == params["scope"]
    assert result.state == (params.get("state") or None)
    assert result.nonce == params.get("nonce")
    assert result.code_challenge == params["code_challenge"]
    assert result.prompt == frozenset(params.get("prompt", "").split())
    assert result.max_age == (int(params["max_age"]) if "max_age" in params else None)


@given(
    st.sampled_from([CLIENT_ID, PUBLIC_ID]).flatmap(valid_request),
    st.sampled_from(NAMES),
    values,
    st.booleans(),
    st.randoms(),
)
def test_repeated_parameter_is_refused(
    params: dict[str, str], name: str, again: str, empty_first: bool, rnd: Any
) -> None:
    """``client_id=&client_id=REAL`` is a repeated client_id too (RFC 6749 §3.1)."""
    query = [(k, v) for k, v in params.items() if k != name]
    first, second = ("", again) if empty_first else (params.get(name, again), again)
    query += [(name, first), (name, second)]
    rnd.shuffle(query)
    assert not isinstance(run(query), authz.AuthorizationRequest), query


@given(
    st.sampled_from([CLIENT_ID, PUBLIC_ID]).flatmap(valid_request),
    st.sampled_from(["state", "nonce", "login_hint"]),
    st.sampled_from(NOT_TEXT),
)
def test_control_character_is_refused(params: dict[str, str], name: str, bad: str) -> None:
    """A NUL or another control character in nonce, state or login_hint: a clear error
    (issue 10 §4), never a request carried on to the code and the ID token."""
    params[name] = params.get(name, "x") + bad
    result = run(list(params.items()))
    assert isinstance(result, authz.FatalAuthorizationError | authz.RedirectableError)
    if isinstance(result, authz.RedirectableError):
        assert result.error == "invalid_request"
        assert is_text(result.state)
