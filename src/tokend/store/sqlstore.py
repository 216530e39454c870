"""``SqlStore``: the one storage object the runtime builds, over one SQLAlchemy engine.

It implements ``tokend.core.ports.Store`` (with ``SqlTransaction``), the key ring's
``tokend.keys.storage.KeyStorage``, the throttle's ``CounterStore`` and the admin operations
the CLI needs, on SQLite and PostgreSQL. Each part is a module of this package, one class
each, all of them subclasses of ``connections.Database`` (the engine, the compiled
statements, the connections: the only state they share):

- ``connections.Database``: connections, SQLite busy retries, ``transaction``, ``ping``;
- ``transaction.SqlTransaction``: what a grant runs inside ``transaction()``;
- ``statements``: the compiled hot-path statements and their row decoders;
- ``clients.Clients``: the client cache and client CRUD;
- ``users.Users``: user CRUD, UserInfo's family-and-user read;
- ``tokens.Tokens``: refresh tokens and families read outside a grant, the access-token
  deny list, DPoP proofs at a resource;
- ``keys.Keys``: signing keys;
- ``device.Devices``: device authorizations (RFC 8628, cross-device sign-in) outside a
  grant (``tokend.core.device.DeviceStorage``);
- ``maintenance.Maintenance``: bulk revocation, events, gc (in batches), abuse counters;
- ``leases.Leases``: one process of many at a time (the gc sweep, event delivery);
- ``cursors.Cursors``: the events webhook's position in the trail.

Why one class made of parts (mixins) rather than a facade holding part objects: the store's
methods are called on every request (``transaction``, ``get_client``, the peeks), and
consumers are typed against narrow Protocols that this one object satisfies; a facade would
add a delegating call to each, or bind methods by hand. Here each method is looked up once,
as before, while its code lives in the module named for its job. No part keeps state of its
own but ``Clients`` (its cache)."""

from __future__ import annotations

from tokend.store.clients import Clients
from tokend.store.cursors import Cursors
from tokend.store.device import Devices
from tokend.store.keys import Keys
from tokend.store.leases import Leases
from tokend.store.maintenance import Maintenance
from tokend.store.tokens import Tokens
from tokend.store.users import Users


class SqlStore(Clients, Users, Tokens, Keys, Devices, Maintenance, Leases, Cursors):
    """``tokend.core.ports.Store`` and the admin operations over one engine (see the
    module's docstring for where each part lives)."""
