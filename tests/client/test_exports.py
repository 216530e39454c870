"""The public surface of ``tokend.client`` is pinned (STYLE.md §8), and the package stands
alone: importing it pulls in httpx, never the server."""

from __future__ import annotations

import json
import subprocess
import sys

import tokend.client

EXPORTED = [
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


def test_all_is_pinned() -> None:
    assert tokend.client.__all__ == EXPORTED


def test_every_exported_name_exists_and_shows_the_public_module() -> None:
    for name in EXPORTED:
        obj = getattr(tokend.client, name)
        assert obj.__module__ == "tokend.client", name


def test_importing_the_client_loads_no_server_code() -> None:
    code = (
        "import json, sys; import tokend.client; "
        "print(json.dumps(sorted(m.split('.')[0] if not m.startswith('tokend') else m "
        "for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert "httpx" in loaded
    server = {"starlette", "sqlalchemy", "jwt", "argon2", "jinja2", "uvicorn", "pydantic"}
    assert not loaded & server, loaded & server
    ours = {m for m in loaded if m.startswith("tokend.")}
    assert all(m.startswith("tokend.client") for m in ours), ours
