"""The protocol without I/O: build ``httpx.Request`` objects and read ``httpx.Response``
objects. The sync and async clients and ``RefreshingAuth`` only add the sending.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote_plus, urlsplit

import httpx

from tokend.client._errors import InvalidResponse, OAuthError, error_from
from tokend.client._models import TokenResponse

AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]
FORM = "application/x-www-form-urlencoded"
JSON_ACCEPT = {"Accept": "application/json"}
DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
# RFC 7235 auth-param: token "=" ( token / quoted-string )
_AUTH_PARAM = re.compile(r'([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True, slots=True, repr=False)
class ClientCredentials:
    """How this client authenticates at the token, revocation and introspection endpoints
    (RFC 6749 §2.3): ``client_secret_basic`` when there is a secret, else ``none``."""

    client_id: str
    client_secret: str | None = None
    method: AuthMethod = "client_secret_basic"

    @classmethod
    def of(
        cls, client_id: str, client_secret: str | None, method: AuthMethod | None
    ) -> ClientCredentials:
        if method is None:
            method = "none" if client_secret is None else "client_secret_basic"
        if method != "none" and client_secret is None:
            raise ValueError(f"{method} needs a client_secret")
        return cls(client_id, client_secret, method)

    def apply(self, params: dict[str, str], headers: dict[str, str]) -> None:
        if self.method == "client_secret_basic":
            assert self.client_secret is not None
            # RFC 6749 §2.3.1: each part form-urlencoded (UTF-8) before base64.
            raw = f"{quote_plus(self.client_id)}:{quote_plus(self.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode("ascii")
        elif self.method == "client_secret_post":
            assert self.client_secret is not None
            params["client_id"] = self.client_id
            params["client_secret"] = self.client_secret
        else:  # "none": a public client identifies itself (RFC 6749 §3.2.1)
            params["client_id"] = self.client_id

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self.client_id!r}, method={self.method!r})"


# The client's own unpadded base64url (RFC 7515 §2), the one for every module of the client:
# tokend.client must not import server code (tokend.core.jose has the server's), so that it
# installs and runs without the server's dependencies.
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def form_request(
    url: str, params: Mapping[str, str | None], credentials: ClientCredentials
) -> httpx.Request:
    """A POST of ``params`` (``None`` values left out) with client authentication."""
    data = {k: v for k, v in params.items() if v is not None}
    headers = {**JSON_ACCEPT, "Content-Type": FORM}
    credentials.apply(data, headers)
    return httpx.Request("POST", url, data=data, headers=headers)


def token_request(
    url: str, grant_type: str, params: Mapping[str, str | None], credentials: ClientCredentials
) -> httpx.Request:
    return form_request(url, {"grant_type": grant_type, **params}, credentials)


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        raise InvalidResponse(
            f"The {what} answered HTTP {response.status_code} with a body that is not JSON.",
            status_code=response.status_code,
        ) from None


def oauth_error(response: httpx.Response, what: str) -> OAuthError | InvalidResponse:
    """The error an unsuccessful answer carries: its JSON body's ``error`` (RFC 6749 §5.2),
    else its ``WWW-Authenticate: Bearer error=...`` (RFC 6750 §3), else ``InvalidResponse``."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("error"), str) and body["error"]:
        description = body.get("error_description")
        uri = body.get("error_uri")
        return error_from(
            body["error"],
            description if isinstance(description, str) and description else None,
            error_uri=uri if isinstance(uri, str) else None,
            status_code=response.status_code,
        )
    header = response.headers.get("www-authenticate")
    challenge = bearer_challenge(header) or auth_challenge(header, "dpop")
    if challenge.get("error"):
        return error_from(
            challenge["error"],
            challenge.get("error_description") or None,
            error_uri=challenge.get("error_uri"),
            status_code=response.status_code,
        )
    return InvalidResponse(
        f"The {what} answered HTTP {response.status_code} without an OAuth error.",
        status_code=response.status_code,
    )


def bearer_challenge(header: str | None) -> dict[str, str]:
    """The auth-params of a ``Bearer`` challenge (RFC 6750 §3), ``{}`` when there is none."""
    return auth_challenge(header, "bearer")


def auth_challenge(header: str | None, scheme: str) -> dict[str, str]:
    """The auth-params of a ``WWW-Authenticate`` challenge of ``scheme`` (lower case:
    ``bearer``, ``dpop``), ``{}`` when the header holds another one or none."""
    if not header:
        return {}
    found, _, rest = header.strip().partition(" ")
    if found.lower() != scheme:
        return {}
    return {
        m.group(1).lower(): (
            re.sub(r"\\(.)", r"\1", m.group(2)) if m.group(2) is not None else m.group(3)
        )
        for m in _AUTH_PARAM.finditer(rest)
    }


def parse_token_response(response: httpx.Response, *, sent_at: float) -> TokenResponse:
    """RFC 6749 §5.1 (200 + JSON) or raise the §5.2 error. The body must have been read."""
    if response.status_code != 200:
        raise oauth_error(response, "token endpoint")
    return TokenResponse.from_response(_json(response, "token endpoint"), sent_at=sent_at)


def parse_json_response(response: httpx.Response, what: str) -> Any:
    if response.status_code != 200:
        raise oauth_error(response, what)
    return _json(response, what)


def discovery_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata lives: OIDC Discovery §4 appends the well-known path;
    RFC 8414 §3 inserts it before the issuer's path component."""
    base = issuer.rstrip("/")
    parts = urlsplit(base)
    oidc = base + DISCOVERY_PATHS[0]
    if parts.path:
        rfc8414 = f"{parts.scheme}://{parts.netloc}{DISCOVERY_PATHS[1]}{parts.path}"
    else:
        rfc8414 = base + DISCOVERY_PATHS[1]
    return [oidc, rfc8414]


# -- PKCE (RFC 7636) and the authorization response (RFC 6749 §4.1.2) -------------------------


def new_code_verifier() -> str:
    """43-128 unreserved characters (RFC 7636 §4.1); 64 here, 384 bits."""
    return secrets.token_urlsafe(48)


def s256(text: str) -> str:
    """BASE64URL(SHA256(ASCII(text))): PKCE's S256 challenge of a code_verifier (RFC 7636
    §4.2), and DPoP's ``ath`` of an access token (RFC 9449 §4.2)."""
    return b64url(hashlib.sha256(text.encode("ascii")).digest())


def authorization_response(url: str, *, state: str, issuer: str, iss_required: bool) -> str:
    """The code of a redirect back from the authorization endpoint, or raise its error.

    - RFC 6749 §10.12: the ``state`` must be the one this client sent (CSRF);
    - RFC 9207 §2.4: an ``iss`` must be the issuer, and must be there when the server
      advertises ``authorization_response_iss_parameter_supported`` (mix-up attacks).
    """
    params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    if params.get("state") != state:
        raise InvalidResponse("The authorization response's state does not match the request.")
    iss = params.get("iss")
    if (iss is not None or iss_required) and iss != issuer:
        raise InvalidResponse("The authorization response comes from another issuer.")
    if "error" in params:
        raise error_from(
            params["error"],
            params.get("error_description") or None,
            error_uri=params.get("error_uri"),
        )
    code = params.get("code")
    if not code:
        raise InvalidResponse("The authorization response has neither code nor error.")
    return code


def id_token_claims(id_token: str) -> Mapping[str, Any]:
    """The payload of a JWS compact token, *not verified* (see ``check_id_token``)."""
    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise InvalidResponse("The id_token is not a JWT.") from None
    if not isinstance(claims, Mapping):
        raise InvalidResponse("The id_token is not a JWT.")
    return claims


def check_id_token(id_token: str | None, *, issuer: str, client_id: str, nonce: str | None) -> None:
    """OIDC Core §3.1.3.7 items 2, 3 and 11 on an id_token received straight from the token
    endpoint over TLS, where item 6 lets TLS stand in for the signature check."""
    if id_token is None:
        if nonce is not None:
            raise InvalidResponse("The token response has no id_token for an openid request.")
        return
    claims = id_token_claims(id_token)
    if claims.get("iss") != issuer:
        raise InvalidResponse("The id_token was issued by another issuer.")
    aud = claims.get("aud")
    if client_id not in (aud if isinstance(aud, list) else [aud]):
        raise InvalidResponse("The id_token is meant for another client.")
    if nonce is not None and claims.get("nonce") != nonce:
        raise InvalidResponse("The id_token's nonce does not match the request.")
