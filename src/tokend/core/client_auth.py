"""Client authentication at the token endpoint (RFC 6749 §2.3, §3.2.1).

Methods: ``client_secret_basic`` (§2.3.1, the spec's), ``client_secret_post`` (§2.3.1, body
parameters) and ``none`` for public clients (which MUST then be identified by ``client_id``,
§3.2.1). "The client MUST NOT use more than one authentication method in each request"
(§2.3): two at once is ``invalid_request``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tokend.core.errors import InvalidClient, InvalidRequest
from tokend.core.models import Client, ClientCredentials
from tokend.core.secrets import verify_secret


def credentials_from(basic: tuple[str, str] | None, params: Mapping[str, str]) -> ClientCredentials:
    """Decide which method the request used. ``basic`` is the decoded Authorization header."""
    body_id = params.get("client_id")
    body_secret = params.get("client_secret")
    if basic is not None:
        if body_secret is not None:
            raise InvalidRequest("Use only one client authentication method per request.")
        if body_id is not None and body_id != basic[0]:
            raise InvalidClient("The client_id parameter does not match the authenticated client.")
        return ClientCredentials("client_secret_basic", basic[0], basic[1])
    if body_secret is not None:
        return ClientCredentials("client_secret_post", body_id, body_secret)
    return ClientCredentials("none", body_id)


def authenticate_client(
    credentials: ClientCredentials, lookup: Callable[[str], Client | None]
) -> Client:
    """The authenticated client, or ``InvalidClient``. Same work for every failure path."""
    if not credentials.client_id:
        verify_secret(None, None)
        raise InvalidClient("Client authentication is required.")
    client = lookup(credentials.client_id)
    if client is None:
        verify_secret(credentials.client_secret, None)
        raise InvalidClient()
    if client.public:
        if credentials.method != "none":
            verify_secret(credentials.client_secret, None)
            raise InvalidClient("A public client does not authenticate with a secret.")
        return client
    if credentials.method == "none":
        verify_secret(None, None)
        raise InvalidClient("Client authentication is required.")
    if not verify_secret(credentials.client_secret, client.secret_hash):
        raise InvalidClient()
    return client
