"""DPoP (RFC 9449) over HTTP: the ``DPoP`` request header in, the ``DPoP-Nonce`` response
header out. The checks themselves are the core's (``tokend.core.dpop``).

The ``htu`` a proof must carry is built from the configured issuer and the route's path,
never from the request's ``Host`` header or scheme (which a proxy may rewrite and a client
may forge): the URI the client was told about in the discovery document is the one it signs.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import Response

from tokend.core.dpop import normalize_htu
from tokend.core.models import DPoPProof
from tokend.runtime import Runtime

NONCE_HEADER = "DPoP-Nonce"


class DPoPHeaders:
    """The DPoP side of one or more routes (their paths, relative to the issuer)."""

    __slots__ = ("_clock", "_htu", "_issuer", "_nonces", "_verifier")

    def __init__(self, rt: Runtime, paths: Iterable[str]) -> None:
        self._verifier = rt.dpop
        self._nonces = rt.dpop.nonces
        self._clock = rt.clock
        self._issuer = rt.policy.issuer
        self._htu = {path: self._target(path) for path in paths}

    def _target(self, path: str) -> str:
        htu = normalize_htu(self._issuer + path)
        if htu is None:
            raise ValueError(f"the issuer {self._issuer!r} is not an http(s) URI")
        return htu

    def proof(self, request: Request, *, access_token: str | None = None) -> DPoPProof | None:
        """The request's checked proof; None when it sent no ``DPoP`` header. Raises
        ``InvalidDPoPProof`` / ``UseDPoPNonce``. Replay is the caller's to record."""
        values = request.headers.getlist("dpop")
        if not values:
            return None
        path = request.scope["path"]
        htu = self._htu.get(path) or self._target(path)
        return self._verifier.verify(
            values,
            htm=request.method,
            htu=htu,
            now=self._clock.now(),
            access_token=access_token,
        )

    def nonce_headers(self) -> dict[str, str]:
        """``DPoP-Nonce: <current nonce>`` when the server requires nonces, else nothing."""
        if self._nonces is None:
            return {}
        return {NONCE_HEADER: self._nonces.current(self._clock.now())}

    def with_nonce(self, request: Request, response: Response) -> Response:
        """RFC 9449 §8.2: the current nonce on the answer to a request that used DPoP."""
        if self._nonces is not None and "dpop" in request.headers:
            response.headers[NONCE_HEADER] = self._nonces.current(self._clock.now())
        return response
