"""DPoP (RFC 9449) over HTTP: the ``DPoP`` request header in, the ``DPoP-Nonce`` response
header out. The checks themselves are the core's (``tokend.core.dpop``).

Server nonces (§8, §9): at the token endpoint whether a proof needs one depends on the
client (``tokend.core.service``), and the current nonce goes out on every answer to a
request that used DPoP, so that a client that needs one has it (§8.2: a server may supply a
new nonce at any time; a client that needs none ignores it). A protected resource knows no
client: there ``TOKEND_DPOP_NONCE`` alone decides, and nonces are required and sent, or
neither.

The ``htu`` a proof must carry is built from the configured issuer and the route's path,
never from the request's ``Host`` header or scheme (which a proxy may rewrite and a client
may forge): the URI the client was told about in the discovery document is the one it signs.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import Response

from tokend.core.dpop import normalize_htu
from tokend.core.errors import UseDPoPNonce
from tokend.core.models import DPoPProof
from tokend.runtime import Runtime

NONCE_HEADER = "DPoP-Nonce"


class DPoPHeaders:
    """The DPoP side of one or more routes (their paths, relative to the issuer).

    ``require_nonce``: ``proof`` refuses a proof without a current server nonce
    (``UseDPoPNonce``); for routes that know no client. ``send_nonce``: the current nonce
    goes out in ``DPoP-Nonce`` (``with_nonce``, ``nonce_headers``).
    """

    __slots__ = ("_clock", "_htu", "_issuer", "_nonces", "_require_nonce", "_verifier")

    def __init__(
        self,
        rt: Runtime,
        paths: Iterable[str],
        *,
        require_nonce: bool = False,
        send_nonce: bool = True,
    ) -> None:
        self._verifier = rt.dpop
        self._nonces = rt.dpop.nonces if send_nonce else None
        self._require_nonce = require_nonce
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
        ``InvalidDPoPProof``, and ``UseDPoPNonce`` with ``require_nonce`` (last, so that a
        client told to use a nonce has nothing else to fix). Replay is the caller's to record."""
        values = request.headers.getlist("dpop")
        if not values:
            return None
        path = request.scope["path"]
        htu = self._htu.get(path) or self._target(path)
        proof = self._verifier.verify(
            values,
            htm=request.method,
            htu=htu,
            now=self._clock.now(),
            access_token=access_token,
        )
        if self._require_nonce and not proof.nonce_ok:
            raise UseDPoPNonce()
        return proof

    def nonce_headers(self) -> dict[str, str]:
        """``DPoP-Nonce: <current nonce>`` when these routes send nonces, else nothing."""
        if self._nonces is None:
            return {}
        return {NONCE_HEADER: self._nonces.current(self._clock.now())}

    def with_nonce(
        self, request: Request, response: Response, *, used_dpop: bool | None = None
    ) -> Response:
        """RFC 9449 §8.2, §9: the current nonce on the answer (success or error) to a request
        that used DPoP (sent a ``DPoP`` header: ``used_dpop`` if the caller knows), when
        these routes send nonces."""
        if used_dpop is None:
            used_dpop = "dpop" in request.headers
        if self._nonces is not None and used_dpop:
            response.headers[NONCE_HEADER] = self._nonces.current(self._clock.now())
        return response
