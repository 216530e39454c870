"""DPoP test support for the client library: the real app with server nonces required
(``TOKEND_DPOP_NONCE=on``) on a runtime's database and clock, and client keys that
misbehave on purpose (a wrong clock, deaf to nonces)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from starlette.testclient import TestClient

from tests.conftest import ISSUER
from tests.support.family import nonce_runtime
from tokend.client import DPoPKey
from tokend.runtime import Runtime
from tokend.web.app import create_app


@contextmanager
def nonce_server(rt: Runtime) -> Iterator[httpx.Client]:
    """An httpx client on the real app, with DPoP nonces required, sharing ``rt``'s
    database, secret and clock."""
    with nonce_runtime(rt) as runtime:
        app = create_app(runtime.settings, runtime=runtime)
        with TestClient(app, base_url=ISSUER, raise_server_exceptions=False) as http:
            yield http


class DeafKey(DPoPKey):
    """A client key that never puts a nonce in its proofs."""

    def nonce_for(self, url: Any) -> str | None:
        return None


def server_key(rt: Runtime, alg: str = "ES256", *, skew: float = 0.0) -> DPoPKey:
    """A key whose ``iat`` is the server's (frozen) clock, plus ``skew`` seconds."""
    return DPoPKey.generate(alg, clock=lambda: rt.clock.now() + skew)


def deaf_key(rt: Runtime) -> DeafKey:
    key = server_key(rt)
    return DeafKey(key._key, clock=rt.clock.now)
