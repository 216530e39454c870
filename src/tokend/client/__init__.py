"""tokend's Python client: refresh tokens without losing them.

::

    from tokend.client import OAuthClient, FileTokenStore
    import httpx

    oauth = OAuthClient.from_issuer("https://login.example", client_id=..., client_secret=...)
    api = httpx.Client(auth=oauth.auth(FileTokenStore("~/.example-token.json")))
    api.get("https://api.example/me")   # Bearer token, refreshed and saved as needed

``refresh_tokens`` is the spec's ``refreshTokens`` example in Python; ``docs/client.md``
has the rest. Only ``httpx`` is needed: nothing here imports the server.
"""

from tokend.client._auth import RefreshingAuth
from tokend.client._client import (
    AsyncOAuthClient,
    OAuthClient,
    async_refresh_tokens,
    refresh_tokens,
)
from tokend.client._dpop import DPoPKey
from tokend.client._errors import (
    AccessDenied,
    AuthorizationPending,
    ClientError,
    EndpointNotSupported,
    ExpiredToken,
    InsufficientScope,
    InvalidClient,
    InvalidDPoPProof,
    InvalidGrant,
    InvalidRequest,
    InvalidResponse,
    InvalidScope,
    InvalidToken,
    MissingToken,
    OAuthError,
    ServerError,
    SlowDown,
    TemporarilyUnavailable,
    TransportError,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    UnsupportedTokenType,
    UseDPoPNonce,
)
from tokend.client._models import (
    AuthorizationRequest,
    DeviceAuthorization,
    Introspection,
    ServerMetadata,
    TokenResponse,
)
from tokend.client._stores import AsyncTokenStore, FileTokenStore, MemoryTokenStore, TokenStore

__all__ = [
    "AccessDenied",
    "AsyncOAuthClient",
    "AsyncTokenStore",
    "AuthorizationPending",
    "AuthorizationRequest",
    "ClientError",
    "DPoPKey",
    "DeviceAuthorization",
    "EndpointNotSupported",
    "ExpiredToken",
    "FileTokenStore",
    "InsufficientScope",
    "Introspection",
    "InvalidClient",
    "InvalidDPoPProof",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidScope",
    "InvalidToken",
    "MemoryTokenStore",
    "MissingToken",
    "OAuthClient",
    "OAuthError",
    "RefreshingAuth",
    "ServerError",
    "ServerMetadata",
    "SlowDown",
    "TemporarilyUnavailable",
    "TokenResponse",
    "TokenStore",
    "TransportError",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "UnsupportedResponseType",
    "UnsupportedTokenType",
    "UseDPoPNonce",
    "async_refresh_tokens",
    "refresh_tokens",
]

for _name in __all__:  # show the public path in reprs and tracebacks (as httpx does)
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("tokend.client._"):
        _obj.__module__ = "tokend.client"
del _name, _obj
