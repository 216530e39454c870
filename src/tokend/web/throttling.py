"""The web side of the abuse limits (``tokend.core.throttle``): who is asking (the source
address), the guard every client-authenticating endpoint runs its work under, and the shape
of the endpoints that are one service call under it (``GuardedEndpoint``: revocation,
introspection).

Source address: the TCP peer's address; only when the peer is one of
``TOKEND_TRUSTED_PROXIES`` (addresses and CIDR networks) is ``X-Forwarded-For`` believed,
and then its right-most entry that is not itself a trusted proxy (every entry to the left of
it could have been written by the client). Without trusted proxies the header is ignored,
so nobody picks his own address by sending it.
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from tokend.core.errors import InvalidClient
from tokend.core.models import ClientCredentials
from tokend.core.throttle import Attempt, Throttle
from tokend.web.offload import Call
from tokend.web.parsing import read_client_params

T = TypeVar("T")
S = TypeVar("S")  # a GuardedEndpoint's service
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_FORWARDED_ENTRIES = 32  # more hops than any real chain of proxies: ignore the rest
_CLIENT_ID_WIDTH = 64  # security_events.client_id: a longer id is no client's anyway


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Sequence[Network]) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


def source_address(request: Request, trusted: Sequence[Network]) -> str:
    """The address a request comes from (see the module's docstring)."""
    client = request.scope.get("client")  # Request.client's (host, port), unwrapped
    peer: str = client[0] if client is not None else ""
    if not trusted:
        return peer
    ip = _ip(peer)
    if ip is None or not _trusted(ip, trusted):
        return peer
    entries: list[str] = []
    for header in request.headers.getlist("x-forwarded-for"):
        entries.extend(header.split(","))
    address = str(ip)
    for entry in reversed(entries[-_MAX_FORWARDED_ENTRIES:]):
        hop = _ip(entry)
        if hop is None:  # not an address: nothing to its left can be believed either
            return address
        address = str(hop)
        if not _trusted(hop, trusted):
            return address
    return address  # every hop is a trusted proxy: the left-most one


class ClientAuthGuard:
    """Runs an endpoint's work under the client-authentication limits.

    - A request that presents a client secret is checked first against what this process
      knows of full windows (``Throttle.check_known``, no I/O: a success costs no
      statement); a known-throttled (client_id, address) or address gets 429 and its secret
      is never compared. A wrong secret counted past a full window gets 429 too.
    - A request without a secret (a public client, ``none``) has nothing to guess: no read
      on its way to success; if it fails, a full counter answers 429, uncounted.
    - ``InvalidClient`` (from parsing the credentials or from authentication) counts one
      failure; the request that fills a window records the ``throttled`` event.
    """

    __slots__ = ("_call", "_throttle", "_trusted")

    def __init__(self, throttle: Throttle, trusted: Sequence[Network], call: Call) -> None:
        self._throttle = throttle
        self._trusted = tuple(trusted)
        self._call = call

    def address(self, request: Request) -> str:
        return source_address(request, self._trusted)

    async def run(
        self,
        request: Request,
        credentials: Callable[[], ClientCredentials],
        work: Callable[[ClientCredentials, str], Awaitable[T]],
    ) -> T:
        """``credentials`` parses the request's (raising ``InvalidClient`` if malformed);
        ``work(credentials, address)`` authenticates and does the rest."""
        address = self.address(request)
        try:
            creds = credentials()
        except InvalidClient:
            await self._failed(None, address, checked=False)
            raise
        judged = creds.method != "none"
        if judged and self._throttle.knows_full_windows:
            # (The keys are digests: made only when this process knows a full window.)
            self._throttle.check_known(self._throttle.policy.client_keys(creds.client_id, address))
        try:
            return await work(creds, address)
        except InvalidClient:
            await self._failed(creds.client_id, address, checked=judged)
            raise

    async def _failed(self, client_id: str | None, address: str, *, checked: bool) -> None:
        keys = self._throttle.policy.client_keys(client_id, address)
        known = client_id if client_id and len(client_id) <= _CLIENT_ID_WIDTH else None
        if known is not None and not known.isprintable():
            known = None
        attempt = Attempt(address, client_id=known)
        await self._call(self._throttle.failed, keys, attempt, checked=checked)


class GuardedEndpoint(ABC, Generic[S, T]):
    """A route handler that authenticates the client as the token endpoint does and answers
    from one call to its service: the body parameters first, then ``_serve`` under
    ``guard``, whose result ``_respond`` turns into the answer. Errors go to the app's
    error dispatcher (``tokend.web.responses.handle_error``)."""

    __slots__ = ("_call", "_guard", "_max_body", "_service")

    def __init__(self, service: S, *, guard: ClientAuthGuard, call: Call, max_body: int) -> None:
        self._service = service
        self._guard = guard
        self._call = call
        self._max_body = max_body

    async def __call__(self, request: Request) -> Response:
        credentials, params = await read_client_params(request, self._max_body)

        async def work(creds: ClientCredentials, address: str) -> T:
            return await self._serve(creds, params, address)

        return self._respond(await self._guard.run(request, credentials, work))

    @abstractmethod
    async def _serve(self, creds: ClientCredentials, params: Mapping[str, str], address: str) -> T:
        """The service call, for the authenticated ``creds`` from ``address``."""

    @abstractmethod
    def _respond(self, result: T) -> Response:
        """The answer for the service's ``result``."""
