"""The authorization request (tokend.core.authorization): RFC 6749 §4.1.1/§4.1.2.1, OIDC Core
§3.1.2.1, RFC 7636, RFC 9700 §2.1.1/§4.1.3.

Errors come in two kinds: *fatal* ones (the client or redirect URI cannot be trusted: an
error page, never a redirect) and *redirectable* ones (back to the verified redirect URI
with ``error`` and ``state``). The order matters: no error may be redirected before the
redirect URI has been matched exactly against the client's registered ones.
"""

from __future__ import annotations

import re

import pytest

from tests.core.world import CHALLENGE, FULL_SCOPE, REDIRECT_URI, World
from tokend.core.authorization import (
    CODE_PREFIX,
    CODE_TTL,
    AuthorizationRequest,
    FatalAuthorizationError,
    RedirectableError,
    needs_consent,
    needs_login,
    new_code,
)
from tokend.core.authorization import validate as validate_request
from tokend.core.secrets import hash_secret

T0 = 1_800_000_000.0


def query(world: World, client_id: str = "web", **params: str | None) -> list[tuple[str, str]]:
    """A valid request of client ``client_id`` as (name, value) pairs, with overrides."""
    reg = world.store.get_client(client_id)
    base: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email",
        "state": "af0ifjsldkj",
        "nonce": "n-0S6_WzA2Mj",
    }
    if reg is not None and reg.public:
        base |= {"code_challenge": CHALLENGE, "code_challenge_method": "S256"}
    base |= params
    return [(k, v) for k, v in base.items() if v is not None]


def validate(world: World, pairs: list[tuple[str, str]]) -> AuthorizationRequest:
    return validate_request(pairs, world.store.get_client)


def fatal(world: World, pairs: list[tuple[str, str]]) -> FatalAuthorizationError:
    with pytest.raises(FatalAuthorizationError) as exc:
        validate(world, pairs)
    assert exc.value.description
    return exc.value


def redirected(
    world: World, pairs: list[tuple[str, str]], error: str, state: str | None = "af0ifjsldkj"
) -> RedirectableError:
    with pytest.raises(RedirectableError) as exc:
        validate(world, pairs)
    err = exc.value
    assert err.error == error, err.description
    assert err.redirect_uri == REDIRECT_URI
    assert err.state == state
    assert err.description
    return err


# -- a valid request ------------------------------------------------------------------------


def test_valid_request(world: World) -> None:
    req = validate(world, query(world, scope="openid offline email", max_age="300"))
    assert req.client == world.web.client
    assert req.redirect_uri == REDIRECT_URI
    assert req.scopes == ("openid", "offline", "email")
    assert req.state == "af0ifjsldkj"
    assert req.nonce == "n-0S6_WzA2Mj"
    assert req.code_challenge is None
    assert req.prompt == frozenset()
    assert req.max_age == 300


def test_valid_public_request_keeps_the_challenge(world: World) -> None:
    req = validate(world, query(world, "spa"))
    assert req.client == world.spa.client
    assert req.code_challenge == CHALLENGE


def test_confidential_client_may_use_pkce(world: World) -> None:
    req = validate(world, query(world, code_challenge=CHALLENGE, code_challenge_method="S256"))
    assert req.code_challenge == CHALLENGE


def test_state_and_nonce_are_optional(world: World) -> None:
    req = validate(world, query(world, state=None, nonce=None))
    assert req.state is None and req.nonce is None


def test_empty_values_count_as_omitted(world: World) -> None:
    # RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if they were
    # omitted from the request."
    req = validate(world, query(world, state="", nonce="", prompt="", code_challenge_method=""))
    assert req.state is None and req.nonce is None and req.prompt == frozenset()


def test_unknown_parameters_are_ignored(world: World) -> None:
    req = validate(world, [*query(world), ("ui_locales", "de"), ("foo", "bar")])
    assert req.scopes == ("openid", "email")


def test_scope_keeps_first_seen_order_without_duplicates(world: World) -> None:
    req = validate(world, query(world, scope="email  openid email"))
    assert req.scopes == ("email", "openid")


def test_registered_uri_with_a_query_matches_exactly(world: World) -> None:
    uri = "https://app.example/cb?tenant=7"
    world.register("tenant", redirect_uris=(REDIRECT_URI, uri))
    req = validate(world, query(world, "tenant", redirect_uri=uri))
    assert req.redirect_uri == uri


def test_any_of_several_registered_uris(world: World) -> None:
    world.register("multi", redirect_uris=("https://a.example/cb", "http://127.0.0.1:8765/cb"))
    for uri in ("https://a.example/cb", "http://127.0.0.1:8765/cb"):
        assert validate(world, query(world, "multi", redirect_uri=uri)).redirect_uri == uri


# -- fatal: never redirect --------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"client_id": None},
        {"client_id": ""},
        {"client_id": "nobody"},
        {"client_id": "WEB"},
        {"redirect_uri": None},
        {"redirect_uri": ""},
        {"redirect_uri": "https://app.example/cb/"},
        {"redirect_uri": "https://APP.example/cb"},
        {"redirect_uri": "HTTPS://app.example/cb"},
        {"redirect_uri": "https://app.example/CB"},
        {"redirect_uri": "https://app.example/cb?x=1"},
        {"redirect_uri": "https://app.example/cb?"},
        {"redirect_uri": "https://app.example/cb#frag"},
        {"redirect_uri": "https://app.example:443/cb"},
        {"redirect_uri": "http://app.example/cb"},
        {"redirect_uri": "https://app.example/cb/../cb"},
        {"redirect_uri": "https://app.example/%63b"},
        {"redirect_uri": "https://app.example/cb/evil"},
        {"redirect_uri": "https://app.example.evil.test/cb"},
        {"redirect_uri": " https://app.example/cb"},
    ],
    ids=[
        "no-client_id",
        "empty-client_id",
        "unknown-client",
        "client_id-case",
        "no-redirect_uri",
        "empty-redirect_uri",
        "trailing-slash",
        "host-case",
        "scheme-case",
        "path-case",
        "extra-query",
        "empty-query",
        "fragment",
        "default-port",
        "http-not-https",
        "dot-segments",
        "percent-encoded",
        "longer-path",
        "suffix-host",
        "leading-space",
    ],
)
def test_untrusted_client_or_redirect_uri_is_fatal(world: World, override: dict) -> None:
    fatal(world, query(world, **override))


def test_registered_uri_with_query_needs_that_query(world: World) -> None:
    world.register("tenant", redirect_uris=("https://app.example/cb?tenant=7",))
    fatal(world, query(world, "tenant", redirect_uri="https://app.example/cb"))
    fatal(world, query(world, "tenant", redirect_uri="https://app.example/cb?tenant=8"))
    fatal(world, query(world, "tenant", redirect_uri="https://app.example/cb?tenant=7&x=1"))


def test_another_clients_redirect_uri_is_fatal(world: World) -> None:
    world.register("elsewhere", redirect_uris=("https://other.example/cb",))
    fatal(world, query(world, "web", redirect_uri="https://other.example/cb"))


@pytest.mark.parametrize("name", ["client_id", "redirect_uri"])
def test_repeated_client_id_or_redirect_uri_is_fatal_even_if_identical(
    world: World, name: str
) -> None:
    pairs = query(world)
    value = dict(pairs)[name]
    fatal(world, [*pairs, (name, value)])


def test_fatal_wins_over_every_other_error(world: World) -> None:
    # Everything else is wrong too, but the redirect URI is not registered: no redirect.
    pairs = query(
        world,
        redirect_uri="https://evil.example/cb",
        response_type="token",
        scope="email",
        code_challenge_method="plain",
        prompt="bogus",
    )
    fatal(world, [*pairs, ("state", "again")])


def test_unknown_client_is_fatal_before_redirect_uri_is_looked_at(world: World) -> None:
    # A redirect_uri registered for *some* client does not make an unknown client's request
    # redirectable.
    fatal(world, query(world, client_id="nobody", response_type="token"))


# -- redirectable -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["response_type", "scope", "nonce", "code_challenge", "prompt", "max_age"]
)
def test_repeated_parameter_is_invalid_request(world: World, name: str) -> None:
    pairs = query(world, code_challenge=CHALLENGE, code_challenge_method="S256", prompt="login")
    pairs.append(("max_age", "5"))
    value = dict(pairs)[name]
    err = redirected(world, [*pairs, (name, value)], "invalid_request")
    assert name in err.description


def test_repeated_state_is_invalid_request_without_state(world: World) -> None:
    # Which of the two would we echo? Neither.
    redirected(world, [*query(world), ("state", "other")], "invalid_request", state=None)


def test_repeated_empty_parameter_counts_as_repeated(world: World) -> None:
    redirected(world, [*query(world), ("nonce", "")], "invalid_request")


@pytest.mark.parametrize(
    ("response_type", "error"),
    [
        (None, "invalid_request"),
        ("token", "unsupported_response_type"),
        ("code id_token", "unsupported_response_type"),
        ("id_token", "unsupported_response_type"),
        ("CODE", "unsupported_response_type"),
        ("code ", "unsupported_response_type"),
    ],
)
def test_response_type_must_be_code(world: World, response_type: str | None, error: str) -> None:
    redirected(world, query(world, response_type=response_type), error)


def test_client_without_the_code_grant_is_unauthorized(world: World) -> None:
    world.register("cc", grant_types=frozenset({"client_credentials"}))
    redirected(world, query(world, "cc"), "unauthorized_client")


@pytest.mark.parametrize(
    ("name", "error"),
    [("request", "request_not_supported"), ("request_uri", "request_uri_not_supported")],
)
def test_request_objects_are_not_supported(world: World, name: str, error: str) -> None:
    redirected(world, [*query(world), (name, "eyJhbGciOiJub25lIn0.e30.")], error)


@pytest.mark.parametrize(
    "scope",
    [None, "email", "offline email", "OPENID email", "openid admin", 'openid "x"', "openid\\x"],
    ids=["missing", "no-openid", "offline-no-openid", "case", "not-the-clients", "quote", "bs"],
)
def test_scope_must_include_openid_and_be_the_clients(world: World, scope: str | None) -> None:
    redirected(world, query(world, scope=scope), "invalid_scope")


def test_scope_within_the_clients_is_accepted_whole(world: World) -> None:
    reg = world.register("narrow", scopes="openid email")
    redirected(world, query(world, "narrow", scope="openid email offline"), "invalid_scope")
    assert validate(world, query(world, reg.client_id)).scopes == ("openid", "email")


# PKCE (RFC 7636, RFC 9700 §2.1.1)


def test_public_client_without_challenge_is_refused(world: World) -> None:
    err = redirected(
        world,
        query(world, "spa", code_challenge=None, code_challenge_method=None),
        "invalid_request",
    )
    assert "PKCE" in err.description


@pytest.mark.parametrize("client_id", ["web", "spa"])
@pytest.mark.parametrize(
    ("challenge", "method"),
    [
        (CHALLENGE, "plain"),
        (CHALLENGE, None),  # RFC 7636 §4.3: defaults to plain
        (CHALLENGE, "s256"),
        (CHALLENGE, "S512"),
        (None, "S256"),  # a method without a challenge
        (CHALLENGE[:42], "S256"),
        (CHALLENGE + "=", "S256"),
        (CHALLENGE[:-1] + "+", "S256"),
        ("a" * 129, "S256"),
    ],
    ids=[
        "plain",
        "no-method",
        "lowercase",
        "unknown-method",
        "method-only",
        "short",
        "padded",
        "plus",
        "too-long",
    ],
)
def test_bad_pkce_is_invalid_request(
    world: World, client_id: str, challenge: str | None, method: str | None
) -> None:
    pairs = query(world, client_id, code_challenge=challenge, code_challenge_method=method)
    redirected(world, pairs, "invalid_request")


# prompt, max_age, nonce


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("none", {"none"}),
        ("login", {"login"}),
        ("consent", {"consent"}),
        ("login consent", {"login", "consent"}),
        ("select_account", {"select_account"}),
    ],
)
def test_prompt_values(world: World, prompt: str, expected: set[str]) -> None:
    assert validate(world, query(world, prompt=prompt)).prompt == frozenset(expected)


@pytest.mark.parametrize("prompt", ["none login", "none consent", "bogus", "login bogus", "NONE"])
def test_bad_prompt_is_invalid_request(world: World, prompt: str) -> None:
    redirected(world, query(world, prompt=prompt), "invalid_request")


@pytest.mark.parametrize(("raw", "value"), [("0", 0), ("3600", 3600), ("9999999999", 9999999999)])
def test_max_age_values(world: World, raw: str, value: int) -> None:
    assert validate(world, query(world, max_age=raw)).max_age == value


@pytest.mark.parametrize("raw", ["-1", "1.5", "abc", "1e3", " 5", "٣", "²", "99999999999"])
def test_bad_max_age_is_invalid_request(world: World, raw: str) -> None:
    redirected(world, query(world, max_age=raw), "invalid_request")


def test_nonce_length_limit(world: World) -> None:
    assert validate(world, query(world, nonce="n" * 512)).nonce == "n" * 512
    redirected(world, query(world, nonce="n" * 513), "invalid_request")


def test_missing_state_is_not_echoed(world: World) -> None:
    redirected(world, query(world, state=None, response_type="token"), "unsupported_response_type",
               state=None)  # fmt: skip


def test_request_error_helper_keeps_redirect_uri_and_state(world: World) -> None:
    req = validate(world, query(world))
    err = req.error("access_denied", "no")
    assert (err.error, err.redirect_uri) == ("access_denied", REDIRECT_URI)
    assert err.state == "af0ifjsldkj"


# -- needs_login / needs_consent --------------------------------------------------------------


def request_with(world: World, **params: str) -> AuthorizationRequest:
    return validate(world, query(world, **params))


def test_needs_login_without_a_session(world: World) -> None:
    assert needs_login(request_with(world), None, T0)


def test_no_login_with_a_session(world: World) -> None:
    assert not needs_login(request_with(world), T0 - 86400, T0)


def test_prompt_login_forces_login_even_with_a_fresh_session(world: World) -> None:
    assert needs_login(request_with(world, prompt="login"), T0, T0)
    assert needs_login(request_with(world, prompt="login consent"), T0, T0)


@pytest.mark.parametrize(
    ("max_age", "age", "expected"),
    [("60", 60, False), ("60", 61, True), ("60", 0, False), ("0", 0, False), ("0", 1, True)],
)
def test_max_age(world: World, max_age: str, age: int, expected: bool) -> None:
    req = request_with(world, max_age=max_age)
    assert needs_login(req, T0 - age, T0) is expected


def test_needs_consent_without_a_grant(world: World) -> None:
    assert needs_consent(request_with(world), None)


def test_remembered_consent_covering_the_request(world: World) -> None:
    req = request_with(world, scope="openid email")
    assert not needs_consent(req, frozenset({"openid", "email"}))
    assert not needs_consent(req, frozenset({"openid", "email", "offline"}))


def test_a_new_scope_needs_consent_again(world: World) -> None:
    req = request_with(world, scope="openid email offline")
    assert needs_consent(req, frozenset({"openid", "email"}))
    assert needs_consent(req, frozenset())


def test_prompt_consent_forces_consent(world: World) -> None:
    req = request_with(world, prompt="consent")
    assert needs_consent(req, frozenset(FULL_SCOPE.split()) | {"email"})


# -- codes ------------------------------------------------------------------------------------


def test_new_codes_are_prefixed_random_and_distinct() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert re.fullmatch(re.escape(CODE_PREFIX) + r"[A-Za-z0-9_-]{43}", code)


def test_code_issuer_stores_only_a_hash_bound_to_the_request(world: World) -> None:
    req = world.authorize(world.spa, "openid offline", nonce="nonce-7", state="s")
    code = world.code(req, user_id="u-9", subject="sub-9", auth_time=T0 - 30)
    (stored,) = world.store.state.codes.values()
    assert stored.code_hash == hash_secret(code)
    assert code not in repr(stored)
    assert stored.client_id == "spa"
    assert stored.user_id == "u-9"
    assert stored.subject == "sub-9"
    assert stored.redirect_uri == REDIRECT_URI
    assert stored.scopes == ("openid", "offline")
    assert stored.nonce == "nonce-7"
    assert stored.code_challenge == CHALLENGE
    assert stored.auth_time == T0 - 30
    assert stored.created_at == T0
    assert CODE_TTL == 60
    assert stored.expires_at == T0 + 60
    assert stored.consumed_at is None and stored.family_id is None
