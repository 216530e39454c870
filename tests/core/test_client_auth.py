"""Client authentication at the token endpoint (tokend.core.client_auth, RFC 6749 §2.3)."""

from __future__ import annotations

import pytest

from tokend.core.client_auth import authenticate_client, credentials_from
from tokend.core.errors import InvalidClient, InvalidRequest, OAuthError
from tokend.core.models import Client, ClientCredentials
from tokend.core.secrets import hash_secret

SECRET = "tkd_cs_confidential-secret"
CONFIDENTIAL = Client(
    client_id="conf",
    name="confidential",
    public=False,
    secret_hash=hash_secret(SECRET),
    grant_types=frozenset({"refresh_token"}),
    redirect_uris=(),
    scopes=("openid",),
)
PUBLIC = Client(
    client_id="pub",
    name="public",
    public=True,
    secret_hash=None,
    grant_types=frozenset({"refresh_token"}),
    redirect_uris=(),
    scopes=("openid",),
)
NO_SECRET_CONFIDENTIAL = Client(
    client_id="nosecret",
    name="confidential without a secret",
    public=False,
    secret_hash=None,
    grant_types=frozenset({"refresh_token"}),
    redirect_uris=(),
    scopes=("openid",),
)
CLIENTS = {c.client_id: c for c in (CONFIDENTIAL, PUBLIC, NO_SECRET_CONFIDENTIAL)}


# -- which method was used ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("basic", "params", "expected"),
    [
        (("conf", SECRET), {}, ClientCredentials("client_secret_basic", "conf", SECRET)),
        (
            ("conf", SECRET),
            {"client_id": "conf"},
            ClientCredentials("client_secret_basic", "conf", SECRET),
        ),
        (
            None,
            {"client_id": "conf", "client_secret": SECRET},
            ClientCredentials("client_secret_post", "conf", SECRET),
        ),
        (None, {"client_id": "pub"}, ClientCredentials("none", "pub", None)),
        (None, {}, ClientCredentials("none", None, None)),
    ],
    ids=["basic", "basic-with-same-body-client-id", "post", "none", "nothing"],
)
def test_credentials_from(
    basic: tuple[str, str] | None, params: dict[str, str], expected: ClientCredentials
) -> None:
    assert credentials_from(basic, params) == expected


@pytest.mark.parametrize(
    "params",
    [{"client_secret": SECRET}, {"client_id": "conf", "client_secret": SECRET}],
    ids=["basic-and-body-secret", "basic-and-post"],
)
def test_two_methods_at_once_is_invalid_request(params: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest) as exc:
        credentials_from(("conf", SECRET), params)
    assert exc.value.error == "invalid_request"
    assert exc.value.status_code == 400


def test_basic_with_a_different_body_client_id_is_invalid_client() -> None:
    with pytest.raises(InvalidClient) as exc:
        credentials_from(("conf", SECRET), {"client_id": "pub"})
    assert exc.value.status_code == 401


# -- authenticating -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "client"),
    [
        (ClientCredentials("client_secret_basic", "conf", SECRET), CONFIDENTIAL),
        (ClientCredentials("client_secret_post", "conf", SECRET), CONFIDENTIAL),
        (ClientCredentials("none", "pub"), PUBLIC),
    ],
    ids=["basic", "post", "none-for-public"],
)
def test_authenticates(credentials: ClientCredentials, client: Client) -> None:
    assert authenticate_client(credentials, CLIENTS.get) == client


FAILURES = [
    ("unknown-client", ClientCredentials("client_secret_basic", "nobody", SECRET)),
    ("unknown-public-client", ClientCredentials("none", "nobody")),
    ("wrong-secret-basic", ClientCredentials("client_secret_basic", "conf", SECRET + "x")),
    ("wrong-secret-post", ClientCredentials("client_secret_post", "conf", "tkd_cs_guess")),
    ("empty-secret", ClientCredentials("client_secret_basic", "conf", "")),
    ("missing-credentials", ClientCredentials("none", None)),
    ("empty-client-id", ClientCredentials("client_secret_basic", "", SECRET)),
    ("post-secret-without-client-id", ClientCredentials("client_secret_post", None, SECRET)),
    ("confidential-with-none", ClientCredentials("none", "conf")),
    ("public-sends-secret-post", ClientCredentials("client_secret_post", "pub", "anything")),
    ("public-sends-secret-basic", ClientCredentials("client_secret_basic", "pub", "anything")),
    ("public-sends-empty-basic", ClientCredentials("client_secret_basic", "pub", "")),
    ("confidential-without-secret", ClientCredentials("client_secret_basic", "nosecret", "")),
    (
        "secret-of-another-client",
        ClientCredentials("client_secret_basic", "nosecret", SECRET),
    ),
]


@pytest.mark.parametrize("credentials", [c for _, c in FAILURES], ids=[i for i, _ in FAILURES])
def test_authentication_failures_are_invalid_client(credentials: ClientCredentials) -> None:
    with pytest.raises(InvalidClient) as exc:
        authenticate_client(credentials, CLIENTS.get)
    assert exc.value.error == "invalid_client"
    assert exc.value.status_code == 401
    assert SECRET not in str(exc.value.to_dict())
    if credentials.client_secret:
        assert credentials.client_secret not in str(exc.value.to_dict())


@pytest.mark.parametrize(
    ("basic", "params", "error"),
    [
        (("conf", SECRET), {}, None),
        (None, {"client_id": "conf", "client_secret": SECRET}, None),
        (None, {"client_id": "pub"}, None),
        (("conf", SECRET), {"client_secret": SECRET}, "invalid_request"),
        (("conf", SECRET), {"client_id": "pub"}, "invalid_client"),
        (None, {"client_id": "conf"}, "invalid_client"),
        (None, {"client_id": "pub", "client_secret": "x"}, "invalid_client"),
        (None, {}, "invalid_client"),
    ],
    ids=[
        "basic",
        "post",
        "none",
        "two-methods",
        "basic-body-mismatch",
        "confidential-none",
        "public-post",
        "anonymous",
    ],
)
def test_from_request_to_client(
    basic: tuple[str, str] | None, params: dict[str, str], error: str | None
) -> None:
    try:
        client = authenticate_client(credentials_from(basic, params), CLIENTS.get)
    except OAuthError as exc:
        assert exc.error == error
    else:
        assert error is None
        assert client.client_id == (basic[0] if basic else params["client_id"])
