"""What every API answer of tokend is made of: JSON bodies with the no-store headers that
RFC 6749 §5.1 asks of token responses (and tokend gives every answer that carries a token,
a secret or an error: token, revocation, introspection, userinfo, health)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

JSON = "application/json"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` as JSON, never stored by a cache; ``headers`` are added to the no-store ones."""
    return Response(orjson.dumps(body), status, {**NO_STORE, **(headers or {})}, JSON)
