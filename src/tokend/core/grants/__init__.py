"""One module per grant type; each exposes a class with ``grant_type`` and ``handle``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol

from tokend.core.errors import InvalidRequest
from tokend.core.models import Client, TokenResponse


class Grant(Protocol):
    grant_type: ClassVar[str]

    def handle(self, client: Client, params: Mapping[str, str], now: float) -> TokenResponse:
        """Run the grant for an authenticated client allowed to use it; raise OAuthError."""
        ...


def require(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise InvalidRequest(f"The {name} parameter is required.")
    return value
