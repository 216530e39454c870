"""Client registration rules (core/registration.py): each rule refuses what it must, with
the operator's message and the field at fault, and lets through what it must not refuse."""

from __future__ import annotations

import dataclasses

import pytest

from tokend.core.registration import (
    DEFAULT_GRANT_TYPES,
    MAX_REFRESH_GRACE,
    ClientRegistration,
    NothingToChange,
    RegistrationError,
    check_redirect_uri,
    client_changes,
    new_secret,
    register_client,
)
from tokend.core.secrets import CLIENT_SECRET_PREFIX, hash_secret, is_well_formed


def refused(request: ClientRegistration) -> RegistrationError:
    with pytest.raises(RegistrationError) as info:
        register_client(request)
    return info.value


def req(**changes: object) -> ClientRegistration:
    return dataclasses.replace(
        ClientRegistration(name="app", redirect_uris=("https://app.example/cb",)), **changes
    )


# -- the client a valid request makes ------------------------------------------------------------


def test_a_confidential_client_gets_a_secret_stored_only_as_its_hash() -> None:
    new = register_client(req(scope="openid  offline email openid", dpop_nonce_required=True))
    c = new.client
    assert new.secret is not None and is_well_formed(new.secret, CLIENT_SECRET_PREFIX)
    assert c.secret_hash == hash_secret(new.secret) and not c.public
    assert c.name == "app" and c.redirect_uris == ("https://app.example/cb",)
    assert c.scopes == ("openid", "offline", "email")  # unique, in the order given
    assert c.grant_types == frozenset(DEFAULT_GRANT_TYPES)
    assert c.subject_type == "public" and c.dpop_nonce_required
    assert (c.refresh_grace, c.access_token_ttl, c.refresh_token_ttl, c.refresh_idle_ttl) == (
        None,
        None,
        None,
        None,
    )
    again = register_client(req())
    assert again.client.client_id != c.client_id and again.secret != new.secret


def test_a_public_client_has_no_secret() -> None:
    new = register_client(req(public=True))
    assert new.secret is None and new.client.secret_hash is None and new.client.public


def test_lifetimes_are_carried_over() -> None:
    c = register_client(
        req(refresh_grace=0, access_token_ttl=60, refresh_token_ttl=7, refresh_idle_ttl=1)
    ).client
    assert (c.refresh_grace, c.access_token_ttl, c.refresh_token_ttl, c.refresh_idle_ttl) == (
        0,
        60,
        7,
        1,
    )
    assert register_client(req(refresh_grace=MAX_REFRESH_GRACE)).client.refresh_grace == 300


# -- each rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize("grace", [-1, MAX_REFRESH_GRACE + 1])
def test_the_refresh_grace_is_bounded(grace: int) -> None:
    err = refused(req(refresh_grace=grace))
    assert str(err) == "the refresh grace must be 0 to 300 seconds" and err.field == "refresh_grace"


@pytest.mark.parametrize("field", ["access_token_ttl", "refresh_token_ttl", "refresh_idle_ttl"])
def test_a_lifetime_is_at_least_one_second(field: str) -> None:
    err = refused(req(**{field: 0}))
    assert err.field == field and str(err) == f"{field} must be at least 1 second"


def test_public_clients_cannot_use_client_credentials() -> None:
    err = refused(req(public=True, grant_types=("client_credentials",)))
    assert str(err) == "public clients cannot use client_credentials"
    assert err.field == "grant_types"
    granted = register_client(req(grant_types=("client_credentials",))).client.grant_types
    assert granted == frozenset({"client_credentials"})


def test_unknown_grant_types_are_refused() -> None:
    err = refused(req(grant_types=("authorization_code", "implicit", "password")))
    assert str(err) == "unknown grant type implicit, password" and err.field == "grant_types"


def test_no_grant_type_means_the_defaults() -> None:
    granted = register_client(req(grant_types=())).client.grant_types
    assert granted == frozenset({"authorization_code", "refresh_token"})


@pytest.mark.parametrize("scope", ['openid "quoted"', "openid\\x", "a" * 129])
def test_a_malformed_scope_is_refused(scope: str) -> None:
    err = refused(req(scope=scope))
    assert str(err) == "malformed scope" and err.field == "scopes"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/relative/cb", "'/relative/cb' must be an absolute URI without a fragment"),
        ("https://app.example/cb#frag", "'https://app.example/cb#frag' must be an absolute"),
        ("https:///no-host", "'https:///no-host' must be an absolute URI"),
        ("http:/no-host", "'http:/no-host' must be an absolute URI"),
        ("http://app.example/cb", "'http://app.example/cb': plain http is allowed only for"),
        ("http://localhost.evil.example/cb", "plain http is allowed only for loopback (RFC 9700)"),
        ("http://10.0.0.1/cb", "plain http is allowed only for loopback"),
    ],
)
def test_bad_redirect_uris_are_refused(uri: str, message: str) -> None:
    err = refused(req(redirect_uris=("https://fine.example/cb", uri)))
    assert message in str(err) and err.field == "redirect_uris"


@pytest.mark.parametrize(
    "uri",
    [
        "http://localhost:8080/cb",
        "http://127.0.0.1/cb",
        "http://[::1]:9000/cb",
        "https://app.example/cb?x=1",
        "com.example.app:/oauth2redirect",  # a private-use scheme (RFC 8252 §7.1)
    ],
)
def test_good_redirect_uris_are_registered(uri: str) -> None:
    assert check_redirect_uri(uri) == uri
    assert register_client(req(redirect_uris=(uri,))).client.redirect_uris == (uri,)


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        ((), "a pairwise client needs at least one redirect URI"),
        (
            ("https://a.example/cb", "https://b.example/cb"),
            "a pairwise client's redirect URIs must all be on one host, got a.example, b.example",
        ),
        (
            ("com.example.app:/cb",),
            "redirect URI 'com.example.app:/cb' has no host to use as sector identifier",
        ),
    ],
)
def test_a_pairwise_client_needs_one_sector(uris: tuple[str, ...], message: str) -> None:
    err = refused(req(subject_type="pairwise", redirect_uris=uris))
    assert str(err) == message and err.field == "subject_type"
    assert register_client(req(subject_type="public", redirect_uris=uris))  # no sector needed


def test_an_unknown_subject_type_is_refused() -> None:
    err = refused(req(subject_type="secret"))
    assert str(err) == "unknown subject type 'secret'" and err.field == "subject_type"


def test_the_first_rule_broken_is_reported() -> None:
    """The order the CLI always checked in: grant types, scope, redirect URIs, subject."""
    everything_wrong = req(
        public=True,
        grant_types=("client_credentials",),
        scope='"',
        redirect_uris=("http://app.example/cb",),
        subject_type="pairwise",
    )
    assert refused(everything_wrong).field == "grant_types"
    assert refused(dataclasses.replace(everything_wrong, public=False)).field == "scopes"
    no_scope_error = dataclasses.replace(everything_wrong, public=False, scope="openid")
    assert refused(no_scope_error).field == "redirect_uris"


# -- updates and secrets -------------------------------------------------------------------------


def test_an_update_names_what_it_changes() -> None:
    assert client_changes(dpop_nonce_required=False) == {"dpop_nonce_required": False}
    assert client_changes(dpop_nonce_required=True) == {"dpop_nonce_required": True}
    with pytest.raises(NothingToChange) as info:
        client_changes()
    assert str(info.value) == "nothing to update: give at least one setting to change"


def test_a_new_secret_for_a_confidential_client_only() -> None:
    confidential = register_client(req())
    secret, secret_hash = new_secret(confidential.client)
    assert secret != confidential.secret and is_well_formed(secret, CLIENT_SECRET_PREFIX)
    assert secret_hash == hash_secret(secret)
    with pytest.raises(RegistrationError) as info:
        new_secret(register_client(req(public=True)).client)
    assert str(info.value) == "public clients have no secret"


def test_device_grant_may_be_a_public_clients_without_redirect_uri() -> None:
    grant = "urn:ietf:params:oauth:grant-type:device_code"
    tv = register_client(req(public=True, redirect_uris=(), grant_types=(grant,)))
    assert tv.client.grant_types == frozenset({grant}) and tv.secret is None


def test_changing_grant_types_follows_the_registration_rules() -> None:
    from tokend.core.registration import client_changes

    grant = "urn:ietf:params:oauth:grant-type:device_code"
    assert client_changes(grant_types=(grant,)) == {"grant_types": frozenset({grant})}
    with pytest.raises(RegistrationError):
        client_changes(grant_types=("client_credentials",), public=True)
    with pytest.raises(RegistrationError):
        client_changes(grant_types=("implicit",))


# -- signing algorithms -------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_a_client_may_name_a_signing_algorithm(alg: str) -> None:
    new = register_client(ClientRegistration(name="a", access_token_alg=alg, id_token_alg=alg))
    assert (new.client.access_token_alg, new.client.id_token_alg) == (alg, alg)
    assert client_changes(access_token_alg=alg) == {"access_token_alg": alg}


def test_no_signing_algorithm_is_the_server_default() -> None:
    client = register_client(ClientRegistration(name="a")).client
    assert client.access_token_alg is None and client.id_token_alg is None
    assert client_changes(id_token_alg="default", access_token_alg="default") == {
        "id_token_alg": None,
        "access_token_alg": None,
    }


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "HS512", "rs256", "RS512", "ES384", ""])
@pytest.mark.parametrize("field", ["access_token_alg", "id_token_alg"])
def test_unknown_none_and_hmac_algorithms_are_refused(alg: str, field: str) -> None:
    with pytest.raises(RegistrationError) as exc:
        register_client(ClientRegistration(name="a", **{field: alg}))
    assert exc.value.field == field
    with pytest.raises(RegistrationError) as exc:
        client_changes(**{field: alg})
    assert exc.value.field == field
