"""``HostLease``: this host's place among the hosts that share one PostgreSQL database.

A host runs sessions only while it holds a lease: a row in ``hosts`` whose end the database's
clock sets, renewed every ``lease / 5`` seconds over a connection of its own. Three times
follow from the lease (SPEC 12):

- the host **fences itself** at ``t0 + 0.8 * lease``, where ``t0`` is when it sent its last
  renewal that the database confirmed: it ends every program it runs, so that nothing of its
  runs once the lease may have lapsed (a renewal confirmed at ``t0`` holds at least until
  ``t0 + lease`` on the database's clock);
- peers **take over** a session once its owner's lease lapsed more than ``lease / 5`` ago
  (the grace absorbs differences in clock rates and the fence's own duration);
- a lease that lapsed never comes back: a host that lost it joins again under a new id, so a
  peer that once saw it lapse can trust that judgement.

A session of a dead host runs again on a peer within ``1.4 * lease`` (the lease, the grace,
one scan) plus the time to start it. Which peer: the first in rendezvous order of the live
hosts (spreads a dead host's sessions evenly), any peer after one more scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING

from .errors import WxcodePtyError

if TYPE_CHECKING:
    import asyncpg

    from .store_postgres import PostgresEngine

__all__ = ["HostFenced", "HostLease", "preferred_host"]

log = logging.getLogger("wxcode_pty")

#: Hosts whose lease lapsed this long ago (seconds) are deleted from the table.
FORGET_AFTER = 7 * 24 * 3600.0


class HostFenced(WxcodePtyError):
    """This host cannot confirm its lease (the database is unreachable): it runs nothing."""


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            return file.read().strip()
    except OSError:
        return None


def preferred_host(project: str, hosts: list[str]) -> str:
    """The live host that should take ``project`` over first (rendezvous hashing)."""
    return max(
        hosts,
        key=lambda host: hashlib.blake2b(f"{project}\0{host}".encode(), digest_size=8).digest(),
    )


class HostLease:
    """Joins, renews, fences, and finds the sessions that peers left behind."""

    def __init__(
        self,
        engine: PostgresEngine,
        *,
        address: str | None,
        lease: float,
        on_fence: Callable[[], Coroutine[object, object, None]],
        on_orphans: Callable[[list[str]], Coroutine[object, object, None]],
        on_owned: Callable[[dict[str, int]], None],
    ) -> None:
        self._engine = engine
        self.address = address
        self.lease = lease
        self.interval = lease / 5
        #: Peers wait this long after a lease lapsed before they take its sessions.
        self.grace = lease / 5
        self._on_fence = on_fence
        self._on_orphans = on_orphans
        self._on_owned = on_owned
        self.host_id: str | None = None
        #: This machine's boot id (its processes and a killed predecessor's share it).
        self.machine: str | None = None
        #: loop.time() until which this host may run programs.
        self._valid_until = 0.0
        self._fence_timer: asyncio.TimerHandle | None = None
        self._fencing: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection[asyncpg.Record] | None = None
        self._takeover: asyncio.Task[None] | None = None
        self._scanning: asyncio.Task[None] | None = None
        #: Orphans seen in the previous scan: any host takes those, preferred or not.
        self._seen: set[str] = set()

    @property
    def holding(self) -> bool:
        """True while this host may run programs."""
        loop = asyncio.get_running_loop()
        return self.host_id is not None and loop.time() < self._valid_until

    async def join(self) -> None:
        """Take a lease (raises when the database refuses) and keep it from now on."""
        await self._register()
        self._heartbeat = asyncio.create_task(self._beat())
        try:
            await self._engine.forget_hosts(FORGET_AFTER)
        except Exception as exc:
            log.warning("could not delete hosts gone for long: %s", exc)

    async def leave(self) -> None:
        """Stop renewing and end the lease at once: peers take over without waiting."""
        for task in (self._heartbeat, self._scanning, self._takeover):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._cancel_fence()
        host_id, self.host_id = self.host_id, None
        if host_id is not None:
            try:
                await asyncio.wait_for(self._engine.release_host(host_id), self.interval)
            except Exception as exc:
                log.warning("could not release the lease of host %s: %s", host_id, exc)
        await self._disconnect()

    async def _register(self) -> None:
        host_id = uuid.uuid4().hex
        if self.machine is None:
            self.machine = await asyncio.to_thread(_boot_id)
        started = asyncio.get_running_loop().time()
        await self._engine.register_host(host_id, self.address, self.lease, self.machine)
        self.host_id = host_id
        self._confirmed(started)
        log.info("host %s joined (address %s, lease %.1fs)", host_id, self.address, self.lease)

    def _confirmed(self, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` was confirmed: move the fence."""
        self._valid_until = sent_at + 0.8 * self.lease
        self._cancel_fence()
        self._fence_timer = asyncio.get_running_loop().call_at(self._valid_until, self._fence)

    def _cancel_fence(self) -> None:
        if self._fence_timer is not None:
            self._fence_timer.cancel()
            self._fence_timer = None

    def lost(self) -> None:
        """The database says the lease has lapsed (a claim found it so): fence now."""
        if self.host_id is not None:
            self._fence()

    def _fence(self) -> None:
        """The lease can no longer be confirmed: end everything this host runs."""
        self._cancel_fence()
        if self._fencing is not None and not self._fencing.done():
            return
        log.error("host %s lost its lease: ending its sessions", self.host_id)
        self.host_id = None
        self._fencing = asyncio.create_task(self._on_fence())

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self.host_id is None:
                    if self._fencing is not None:
                        # Join again only once the fence is done; a fence that failed has
                        # logged why and must not keep this host out for good.
                        await asyncio.wait({self._fencing})
                    await asyncio.wait_for(self._register(), self.interval)
                else:
                    sent_at = loop.time()
                    if await self._renew():
                        if self.host_id is not None:  # not fenced while the answer came
                            self._confirmed(sent_at)
                    else:
                        self._fence()
                        continue
                if self._scanning is None or self._scanning.done():
                    # Not awaited: a slow scan on the pool must not delay the next renewal.
                    self._scanning = asyncio.create_task(self._scan())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("host %s: database unreachable: %s", self.host_id, exc)
                await self._disconnect()

    async def _renew(self) -> bool:
        host_id = self.host_id
        assert host_id is not None
        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncio.wait_for(self._engine.connect(), self.interval)
        return await asyncio.wait_for(
            self._engine.renew_host(self._connection, host_id, self.lease), self.interval
        )

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()  # no goodbye over a connection that may be dead

    async def _scan(self) -> None:
        """Take over the sessions whose owners' leases lapsed."""
        host_id = self.host_id
        try:
            owned = await self._engine.owned(host_id) if host_id is not None else {}
            orphans = await self._engine.orphans(self.grace)
            hosts = sorted(await self._engine.live_hosts()) if orphans else []
        except Exception as exc:
            log.warning("host %s: looking for sessions to take over failed: %s", self.host_id, exc)
            return
        if host_id is not None and host_id == self.host_id:
            self._on_owned(owned)
        if not orphans:
            self._seen = set()
            return
        mine = [
            project
            for project in orphans
            if project in self._seen or not hosts or preferred_host(project, hosts) == self.host_id
        ]
        self._seen = set(orphans) - set(mine)
        busy = self._takeover is not None and not self._takeover.done()
        if mine and self.holding and not busy:
            # Not awaited: starting many programs must not delay the next renewal.
            self._takeover = asyncio.create_task(self._on_orphans(mine))
