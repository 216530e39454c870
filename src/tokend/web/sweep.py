"""The server's gc sweep (``TOKEND_GC_INTERVAL``): every ``interval`` seconds, what `tokend
gc` deletes (``tokend.runtime.collect_garbage``, in batches of set-based deletes, each its own
short transaction), done by one worker of all the servers on the database at a time.

Every worker of every server runs this loop; each round, each tries to take (or renew) the
``gc`` lease (``SqlStore.take_lease``), and only its holder sweeps. The lease lasts a few
intervals and is renewed between batches while a sweep runs, so a holder that dies is
replaced within ``LEASE_INTERVALS`` intervals, and a long sweep is not joined by a second
one. The database work runs on a thread, never on the event loop."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.concurrency import run_in_threadpool

from tokend.runtime import GC_BATCH, Runtime, collect_garbage, new_holder_id

log = logging.getLogger("tokend.gc")

LEASE = "gc"
LEASE_INTERVALS = 3  # the lease outlives this many intervals without a renewal


class GcSweep:
    """One process's part in the sweep: ``run_once`` (a thread's work) and ``run`` (the
    loop, an asyncio task started by the app's lifespan)."""

    def __init__(
        self, rt: Runtime, interval: float, *, holder: str | None = None, batch: int = GC_BATCH
    ) -> None:
        if interval <= 0:
            raise ValueError("the gc sweep needs a positive interval")
        self._rt = rt
        self.interval = interval
        self.ttl = LEASE_INTERVALS * interval
        self.holder = holder or new_holder_id()
        self._batch = batch

    def _take(self) -> bool:
        return self._rt.store.take_lease(LEASE, self.holder, now=self._rt.clock.now(), ttl=self.ttl)

    def run_once(self) -> dict[str, int] | None:
        """Sweep if this process holds the lease (taking or renewing it): the counts deleted,
        or None when another process holds it."""
        if not self._take():
            return None
        started = renewed = time.monotonic()
        lost = False

        def keep_going() -> bool:
            nonlocal renewed, lost
            now = time.monotonic()
            if now - renewed >= self.ttl / LEASE_INTERVALS:
                renewed = now
                lost = not self._take()
            return not lost

        out = collect_garbage(self._rt, batch=self._batch, keep_going=keep_going)
        took = time.monotonic() - started
        counts = " ".join(f"{name}={n}" for name, n in out.items())
        if lost:
            log.warning("gc sweep stopped: the lease went to another process; %s", counts)
        else:
            log.info("gc sweep: %s in %.3f s", counts, took)
        return out

    def release(self) -> None:
        self._rt.store.release_lease(LEASE, self.holder)

    async def run(self) -> None:
        """Every ``interval`` seconds, ``run_once`` on a thread; on cancellation (shutdown),
        give the lease up so that another process takes over at once."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await run_in_threadpool(self.run_once)
                except Exception:
                    log.exception("gc sweep failed")
        finally:
            try:
                await asyncio.shield(run_in_threadpool(self.release))
            except Exception:
                log.exception("could not release the gc lease")
