"""Several ``wxcode-pty serve`` hosts on one PostgreSQL database (SPEC 12), in real processes.

Three hosts share a database, a workdir and a token; HAProxy (configured from
``examples/haproxy-cluster.cfg``) sits in front of them where a test needs it. Skipped, with
the reason, without PostgreSQL's binaries or (for the tests through it) HAProxy. Each session's program is a small
shell with a marker in its argv; a watcher polling ``/proc`` counts, over the whole test, how
many of them ran at once in each project's folder: never more than one is the property that
matters most (two Claude processes on one conversation corrupt it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
import pytest

from .api_standin import assistant_texts, echo_answer, prompts_of, running_standin
from .claude_cli import REAL_CLAUDE_MISSING, prepare_config_dir, real_claude, transcript_path
from .cluster import (
    HAPROXY,
    TOKEN,
    Cluster,
    ClusterHost,
    HAProxy,
    ProgramWatcher,
    can_isolate,
    echo_program,
    inner_pid,
    new_marker,
)
from .conftest import Attached
from .test_claude_conversations import TURN, until_on_screen

#: Seconds a host's lease lasts in these tests (the default, 15, would make them slow).
LEASE = 3.0
#: How long a dead host's sessions may take to run again elsewhere: the lease, a grace and a
#: scan (1.4 leases, README), plus time to start the programs on two busy cores.
TAKEOVER = 1.4 * LEASE + 12.0

Make = Callable[..., Awaitable[Cluster]]
_T = TypeVar("_T")


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def marker() -> str:
    return new_marker()


@pytest.fixture
def watcher(marker: str) -> Iterator[ProgramWatcher]:
    with ProgramWatcher(marker) as running:
        yield running


@pytest.fixture
async def make_cluster(tmp_path: Path, postgres_url: str, marker: str) -> AsyncIterator[Make]:
    """Starts clusters on this test's fresh database; stops every host afterwards."""
    made: list[Cluster] = []

    async def make(**options: Any) -> Cluster:
        options.setdefault("command", echo_program(marker))
        options.setdefault("lease", LEASE)
        cluster = Cluster(tmp_path / f"cluster{len(made)}", postgres_url, **options)
        made.append(cluster)
        # Blocking waits on a thread: this loop must stay free for the relay and clients.
        return await asyncio.to_thread(cluster.start)

    yield make
    for cluster in made:
        await asyncio.to_thread(cluster.stop)


@pytest.fixture
async def make_proxy(tmp_path: Path) -> AsyncIterator[Callable[[Cluster], Awaitable[HAProxy]]]:
    if shutil.which(HAPROXY) is None:
        pytest.skip("HAProxy is not installed: apt-get install haproxy")
    started: list[HAProxy] = []

    async def make(cluster: Cluster) -> HAProxy:
        proxy = HAProxy(
            tmp_path / f"haproxy{len(started)}",
            [(h.name, h.port) for h in cluster.hosts],
            cluster.token,
        )
        started.append(proxy)
        return await asyncio.to_thread(proxy.start)

    yield make
    for proxy in started:
        await asyncio.to_thread(proxy.stop)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # Bounded: a host that hangs fails the test instead of stalling it.
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=5)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        yield session


# -- helpers -----------------------------------------------------------------------------------


async def post_session(
    http: aiohttp.ClientSession, base: str, project: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{base}/api/sessions/{project}") as response:
        body = await response.json()
        return response.status, body


async def get_session(http: aiohttp.ClientSession, base: str, project: str) -> dict[str, Any]:
    async with http.get(f"{base}/api/sessions/{project}") as response:
        assert response.status == 200, (project, response.status, await response.text())
        body: dict[str, Any] = await response.json()
        return body


async def list_sessions(http: aiohttp.ClientSession, base: str) -> dict[str, dict[str, Any]]:
    async with http.get(f"{base}/api/sessions") as response:
        assert response.status == 200, (response.status, await response.text())
        return {s["output_project_id"]: s for s in await response.json()}


async def metric(http: aiohttp.ClientSession, base: str, name: str) -> float:
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200, response.status
        text = await response.text()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"no {name} in /metrics of {base}:\n{text}"
    return float(match.group(1))


async def attach(http: aiohttp.ClientSession, ws_base: str, origin: str, project: str) -> Attached:
    """A terminal on ``project`` through ``ws_base``; the Origin a page there would send."""
    ws = await http.ws_connect(f"{ws_base}/ws/{project}", headers={"Origin": origin})
    return await Attached(ws).handshake(timeout=20)


async def type_line(client: Attached, text: str) -> None:
    """Types a line and waits until the program itself (not the terminal's echo) answers."""
    await client.ws.send_bytes(f"{text}\r".encode())
    await client.read_until(f"echo:{text}".encode(), timeout=20)


async def eventually(
    probe: Callable[[], Awaitable[_T]],
    check: Callable[[_T], bool],
    timeout: float,
    what: str,
    on_timeout: Callable[[], str] = lambda: "",
    summary: Callable[[_T], object] = lambda value: value,
) -> _T:
    """Polls ``probe`` until ``check`` holds, with a deadline; on failure the last value
    (through ``summary``) and ``on_timeout()`` (the hosts' logs)."""
    deadline = time.monotonic() + timeout
    last: _T | None = None
    while True:
        with contextlib.suppress(aiohttp.ClientError, AssertionError, TimeoutError):
            async with asyncio.timeout(max(1.0, min(10.0, deadline - time.monotonic()))):
                last = await probe()
            if check(last):
                return last
        if time.monotonic() > deadline:
            shown = "nothing" if last is None else summary(last)
            raise AssertionError(f"{what} not within {timeout:.0f}s; last: {shown}\n{on_timeout()}")
        await asyncio.sleep(0.1)


async def create_on(
    http: aiohttp.ClientSession, host: ClusterHost, projects: list[str], parallel: int = 8
) -> dict[str, dict[str, Any]]:
    """Creates ``projects`` through ``host`` (which therefore owns them)."""
    gate = asyncio.Semaphore(parallel)

    async def one(project: str) -> tuple[str, dict[str, Any]]:
        async with gate:
            status, body = await post_session(http, host.url, project)
            assert status == 201, (project, status, body)
            assert body["host"] == host.url, body
            return project, body

    return dict(await asyncio.gather(*(one(p) for p in projects)))


async def wait_moved_off(
    http: aiohttp.ClientSession,
    cluster: Cluster,
    gone: ClusterHost,
    projects: list[str],
    timeout: float,
) -> dict[str, dict[str, Any]]:
    """Waits until every project is running on a host other than ``gone``, as a survivor's
    session list says; then each project as its new owner describes it."""
    survivors = [h for h in cluster.hosts if h is not gone]
    urls = {h.url for h in survivors}

    def pending(listing: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
        return {
            p: (str(listing[p]["host"]), listing[p]["status"]) if p in listing else ("", "absent")
            for p in projects
            if p not in listing
            or listing[p]["status"] != "running"
            or listing[p]["host"] not in urls
        }

    async def probe() -> dict[str, dict[str, Any]]:
        return await list_sessions(http, survivors[0].url)

    await eventually(
        probe,
        lambda listing: not pending(listing),
        timeout,
        f"{len(projects)} sessions moved off {gone.name} ({gone.url})",
        cluster.logs,
        lambda listing: f"not yet moved: {pending(listing)}",
    )
    # Each as its owner describes it, once its program is up: another host's list may say
    # "running" on the new owner a moment before the owner has started it (pid still null).
    deadline = time.monotonic() + timeout
    owners = await list_sessions(http, survivors[0].url)
    described: dict[str, dict[str, Any]] = {}
    for project in projects:
        owner = owners[project]["host"]

        async def describe(project: str = project, owner: str = owner) -> dict[str, Any]:
            return await get_session(http, owner, project)

        def up(info: dict[str, Any], owner: str = owner) -> bool:
            return info["status"] == "running" and info["pid"] is not None and info["host"] == owner

        described[project] = await eventually(
            describe,
            up,
            max(1.0, deadline - time.monotonic()),
            f"{project} running on {owner} with a pid",
            cluster.logs,
        )
    return described


def pids_of(watcher: ProgramWatcher, projects: list[str]) -> dict[str, int]:
    """The one program of each project, as /proc shows it now."""
    live = watcher.live()
    for project in projects:
        assert len(live.get(project, ())) == 1, (project, live.get(project))
    return {p: next(iter(live[p])) for p in projects}


# -- any host answers any request --------------------------------------------------------------


async def test_a_terminal_reaches_its_owner_through_any_host_and_through_haproxy(
    make_cluster: Make,
    make_proxy: Callable[[Cluster], Awaitable[HAProxy]],
    http: aiohttp.ClientSession,
    watcher: ProgramWatcher,
) -> None:
    cluster = await make_cluster(size=3)
    proxy = await make_proxy(cluster)
    owner, other, third = cluster.hosts

    # A project that HAProxy hashes to a host other than the one that will own it.
    routes: dict[str, str] = {}
    for n in range(50):
        async with http.get(f"{proxy.url}/api/sessions/routed-{n}") as response:
            assert response.status == 404
            routes[f"routed-{n}"] = response.headers["X-Wxcode-Pty-Backend"]
    project = next((p for p, name in routes.items() if name != owner.name), None)
    assert project is not None, f"HAProxy sent every project to {owner.name}"
    routed_to = next(h for h in cluster.hosts if h.name == routes[project])

    status, created = await post_session(http, owner.url, project)
    assert status == 201 and created["host"] == owner.url, created
    await watcher.until(lambda live: len(live.get(project, ())) == 1)
    (pid,) = watcher.live()[project]
    assert pid == created["pid"], "the API names the program that runs"
    forwards_before = await metric(http, routed_to.url, "wxcode_pty_forwards_total")

    # Through HAProxy, which sends it to a host that does not own it: the same protocol.
    client = await attach(http, proxy.ws_url, proxy.url, project)
    assert client.hello["session_id"] == created["session_id"]
    assert client.hello["resumed"] is False
    await client.read_until(b"ready")
    await type_line(client, "through-haproxy")
    assert await metric(http, routed_to.url, "wxcode_pty_forwards_total") > forwards_before

    # Straight to a host that does not own it, with a page of that host's origin.
    elsewhere = third if routed_to is other else other
    direct = await attach(http, elsewhere.ws_url, elsewhere.url, project)
    assert direct.hello["session_id"] == created["session_id"]
    await type_line(direct, "through-a-peer")
    # Both terminals are clients of the one program: each sees what the other typed.
    await client.read_until(b"echo:through-a-peer", timeout=20)

    # The REST API answers alike on every host, and names the owner.
    for host in cluster.hosts:
        info = await get_session(http, host.url, project)
        assert info["session_id"] == created["session_id"] and info["host"] == owner.url
        assert info["pid"] == created["pid"]
    assert await metric(http, owner.url, "wxcode_pty_owned_sessions") == 1
    assert await metric(http, other.url, "wxcode_pty_owned_sessions") == 0
    assert await metric(http, third.url, "wxcode_pty_owned_sessions") == 0

    # Still the one program, on its owner.
    assert watcher.live()[project] == {pid}
    await client.ws.close()
    await direct.ws.close()
    watcher.assert_never_two()


async def test_fifty_concurrent_get_or_create_calls_spawn_one_program(
    make_cluster: Make,
    make_proxy: Callable[[Cluster], Awaitable[HAProxy]],
    http: aiohttp.ClientSession,
    watcher: ProgramWatcher,
) -> None:
    cluster = await make_cluster(size=3)
    proxy = await make_proxy(cluster)
    bases = [*(h.url for h in cluster.hosts), proxy.url]
    go = asyncio.Event()

    async def one(i: int) -> tuple[int, dict[str, Any]]:
        await go.wait()  # all at once, as far as one client loop can
        return await post_session(http, bases[i % len(bases)], "contested")

    calls = [asyncio.create_task(one(i)) for i in range(50)]
    await asyncio.sleep(0)
    go.set()
    answers = await asyncio.gather(*calls)

    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 49 + [201], statuses
    assert len({body["session_id"] for _, body in answers}) == 1, answers
    assert len({body["host"] for _, body in answers}) == 1, answers
    owner = cluster.host_at(answers[0][1]["host"])
    await watcher.until(lambda live: len(live.get("contested", ())) == 1)

    spawns = [await metric(http, h.url, "wxcode_pty_spawns_total") for h in cluster.hosts]
    assert sum(spawns) == 1, spawns
    for host in cluster.hosts:
        owned = await metric(http, host.url, "wxcode_pty_owned_sessions")
        assert owned == (1 if host is owner else 0), (host.name, owned)
    watcher.assert_never_two()


# -- a host that dies --------------------------------------------------------------------------

#: Sessions on the host that is killed. 100 light programs (a shell each) start and move in a
#: few seconds on two cores.
KILLED_SESSIONS = 100


async def test_sessions_of_a_killed_host_run_again_on_the_others(
    make_cluster: Make,
    make_proxy: Callable[[Cluster], Awaitable[HAProxy]],
    http: aiohttp.ClientSession,
    watcher: ProgramWatcher,
) -> None:
    cluster = await make_cluster(size=3)
    proxy = await make_proxy(cluster)
    doomed = cluster.hosts[0]
    projects = [f"k{n:03d}" for n in range(KILLED_SESSIONS)]
    created = await create_on(http, doomed, projects)
    await watcher.until(lambda live: all(len(live.get(p, ())) == 1 for p in projects), 60)
    before = pids_of(watcher, projects)
    # Someone is watching one of them when its host dies.
    client = await attach(http, proxy.ws_url, proxy.url, projects[0])
    await type_line(client, "before")

    await asyncio.to_thread(doomed.kill)
    killed_at = time.monotonic()
    # The terminal's socket ends with the host (whichever host it went through).
    await client.wait_closed(timeout=20)

    moved = await wait_moved_off(http, cluster, doomed, projects, TAKEOVER)
    elapsed = time.monotonic() - killed_at
    # Every session is running again, a new program for each, never two at once.
    after = await watcher.until(
        lambda live: all(len(live.get(p, ())) == 1 and before[p] not in live[p] for p in projects),
        30,
    )
    for project in projects:
        # A respawned program is a new session of the same project (as after a restart).
        assert moved[project]["session_id"] != created[project]["session_id"]
        assert moved[project]["pid"] in after[project], (project, moved[project])
    takeovers = [await metric(http, h.url, "wxcode_pty_takeovers_total") for h in cluster.hosts[1:]]
    assert sum(takeovers) == KILLED_SESSIONS, takeovers
    assert elapsed < TAKEOVER, elapsed

    # A client that reconnects (through HAProxy, which has to route around the dead host)
    # finds its session, respawned.
    again = await attach(http, proxy.ws_url, proxy.url, projects[0])
    assert again.hello["session_id"] == moved[projects[0]]["session_id"]
    assert again.hello["resumed"] is True
    await type_line(again, "after")
    await again.ws.close()

    # The host comes back (a new lease): it takes nothing back and starts nothing twice.
    await asyncio.to_thread(doomed.restart)
    fresh = await post_session(http, doomed.url, "after-restart")
    assert fresh[0] == 201 and fresh[1]["host"] == doomed.url, fresh
    listing = await list_sessions(http, doomed.url)
    for project in projects:
        assert listing[project]["host"] == moved[project]["host"], listing[project]
    await watcher.until(lambda live: len(live.get("after-restart", ())) == 1)
    assert {p: watcher.live()[p] for p in projects} == {p: after[p] for p in projects}
    watcher.assert_never_two()


async def test_a_gracefully_stopped_host_hands_its_sessions_over_before_its_lease_lapses(
    make_cluster: Make, http: aiohttp.ClientSession, watcher: ProgramWatcher
) -> None:
    # A long lease, so that "before it lapses" is far from "after it lapsed".
    lease = 15.0
    cluster = await make_cluster(size=3, lease=lease)
    leaving = cluster.hosts[0]
    projects = [f"g{n}" for n in range(10)]
    await create_on(http, leaving, projects)
    await watcher.until(lambda live: all(len(live.get(p, ())) == 1 for p in projects))
    before = pids_of(watcher, projects)

    stopping = asyncio.create_task(asyncio.to_thread(leaving.terminate, 30))
    started = time.monotonic()
    await wait_moved_off(http, cluster, leaving, projects, lease)
    elapsed = time.monotonic() - started
    assert await stopping == 0, leaving.log()
    assert elapsed < 0.6 * lease, f"took {elapsed:.1f}s: as slow as a lapsed lease"
    await watcher.until(
        lambda live: all(len(live.get(p, ())) == 1 and before[p] not in live[p] for p in projects)
    )
    watcher.assert_never_two()


# -- a host cut from the database --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reset", "blackhole"])
async def test_a_host_cut_from_the_database_ends_its_programs_before_the_others_take_over(
    mode: Literal["reset", "blackhole"],
    make_cluster: Make,
    http: aiohttp.ClientSession,
    watcher: ProgramWatcher,
) -> None:
    """``reset``: the host hears at once that its connections died. ``blackhole``: they just
    go silent (the harder case: nothing fails, the renewals never come back).

    Each host runs in a PID namespace of its own where the machine allows it: on one machine
    a peer that takes a session over also ends what is left of its previous run, which would
    hide a host that does not end its own programs. Either way the old programs must end
    within the lease, before a peer may take over."""
    cluster = await make_cluster(size=3, relayed=[0], isolated=can_isolate())
    cut_off = cluster.hosts[0]
    relay = cluster.relays[0]
    projects = [f"c{n}" for n in range(8)]
    created = await create_on(http, cut_off, projects)
    await watcher.until(lambda live: all(len(live.get(p, ())) == 1 for p in projects))
    before = pids_of(watcher, projects)

    await asyncio.to_thread(relay.cut, mode)
    cut_at = time.monotonic()
    moved = await wait_moved_off(http, cluster, cut_off, projects, TAKEOVER)
    # The successors run: had an old program outlived the cut, the watcher saw both.
    watcher.assert_never_two()
    after = await watcher.until(
        lambda live: all(len(live.get(p, ())) == 1 and before[p] not in live[p] for p in projects)
    )
    watcher.assert_never_two()
    for project in projects:
        old, new = watcher.seen[before[project]], watcher.seen[next(iter(after[project]))]
        # The host ended its own program (it could not confirm its lease) before a peer
        # started the next one; and it did so within its lease.
        assert old.last < new.first, (project, old, new)
        assert old.last - cut_at < LEASE, (project, old.last - cut_at)
        assert moved[project]["session_id"] != created[project]["session_id"]
        assert moved[project]["pid"] in {inner_pid(pid) for pid in after[project]}, moved[project]
    assert cut_off.alive, "a host that lost the database keeps serving (and forwarding)"

    # The database comes back: the host joins again and runs new sessions, but the ones it
    # lost stay where they went.
    await asyncio.to_thread(relay.restore)

    async def create_fresh() -> tuple[int, dict[str, Any]]:
        return await post_session(http, cut_off.url, "after-cut")

    fresh = await eventually(
        create_fresh,
        lambda answer: answer[0] in (200, 201) and answer[1].get("host") == cut_off.url,
        TAKEOVER,
        "a new session on the host that lost the database",
        cluster.logs,
    )
    assert fresh[1]["status"] == "running"
    listing = await list_sessions(http, cut_off.url)
    for project in projects:
        assert listing[project]["host"] == moved[project]["host"], listing[project]
    await watcher.until(lambda live: len(live.get("after-cut", ())) == 1)
    assert all(watcher.live()[p] == after[p] for p in projects)
    watcher.assert_never_two()


# -- the real Claude CLI -----------------------------------------------------------------------


def is_claude(argv: list[bytes]) -> bool:
    """The real CLI's own process (its children, e.g. a Bash tool's shell, are not)."""
    return bool(argv) and Path(argv[0].decode(errors="replace")).name in ("claude", "claude.exe")


@pytest.mark.real_claude
async def test_a_conversation_continues_on_another_host_after_its_host_is_killed(
    make_cluster: Make, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The real CLI, offline against the API stand-in: its host is SIGKILLed mid-conversation
    and a peer resumes it (``--resume``, same folder, same config dir on shared storage);
    the next request Claude sends carries the earlier turn."""
    binary = real_claude()
    if binary is None:
        pytest.skip(REAL_CLAUDE_MISSING)
    project = "cluster-claude"  # a name no other test's Claude runs in
    async with running_standin() as standin:
        config = tmp_path / "claude-config"
        home = tmp_path / "home"
        home.mkdir()
        cluster_folder = tmp_path / "cluster0"
        cwd = cluster_folder / "projects" / project
        cwd.mkdir(parents=True)
        prepare_config_dir(config, [cwd], permission_mode="default")
        with ProgramWatcher("", matches=is_claude) as claudes:
            cluster = await make_cluster(
                size=2,
                program=["--claude", str(binary)],
                extra_args=[
                    "--env", f"ANTHROPIC_BASE_URL={standin.url}",
                    "--env", "ANTHROPIC_AUTH_TOKEN=standin-token",
                    # Left on, Claude would update itself with npm during the test.
                    "--env", "DISABLE_AUTOUPDATER=1",
                ],
                env={"CLAUDE_CONFIG_DIR": str(config), "HOME": str(home)},
                # Nothing of the developer's own Claude: no session markers, no account.
                unset_env=[
                    k for k in os.environ
                    if k == "CLAUDECODE" or k.startswith(("CLAUDE_CODE_", "ANTHROPIC_"))
                ],
            )  # fmt: skip
            doomed, survivor = cluster.hosts
            client = await attach(http, doomed.ws_url, doomed.url, project)
            await until_on_screen(client, "manual mode on")
            claude_id = client.hello["claude_session_id"]
            await client.ws.send_bytes(b"first prompt alpha\r")
            await standin.wait_for_prompt("first prompt alpha", TURN)
            await until_on_screen(client, echo_answer("first prompt alpha"))
            transcript = transcript_path(config, cwd, claude_id)
            # On disk before the kill, so that the kill cannot be what loses it.
            async with asyncio.timeout(TURN):
                while not (
                    transcript.exists()
                    and echo_answer("first prompt alpha") in transcript.read_text()
                ):
                    await asyncio.sleep(0.05)

            await asyncio.to_thread(doomed.kill)
            moved = await wait_moved_off(http, cluster, doomed, [project], TAKEOVER + TURN)
            assert moved[project]["host"] == survivor.url
            pid = int(moved[project]["pid"])
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            assert argv[argv.index("--resume") + 1] == claude_id, argv
            assert os.readlink(f"/proc/{pid}/cwd") == str(cwd.resolve())

            back = await attach(http, survivor.ws_url, survivor.url, project)
            assert back.hello["resumed"] is True and back.hello["claude_session_id"] == claude_id
            await until_on_screen(back, "manual mode on")
            await back.ws.send_bytes(b"second prompt beta\r")
            second = await standin.wait_for_prompt("second prompt beta", TURN)
            assert prompts_of(second.messages) == ["first prompt alpha", "second prompt beta"]
            assert echo_answer("first prompt alpha") in assistant_texts(second.messages)
            await back.ws.close()
        claudes.assert_never_two()
        assert claudes.most.get(project) == 1, claudes.most


@pytest.mark.parametrize("mode", ["reset", "blackhole"])
async def test_a_host_cut_from_the_database_still_stops_promptly(
    mode: Literal["reset", "blackhole"],
    make_cluster: Make,
    http: aiohttp.ClientSession,
    watcher: ProgramWatcher,
) -> None:
    """SIGTERM on a host that lost its database: it has nothing left to hand over, and a
    service manager's stop timeout (90 s for systemd) must not be what ends it."""
    cluster = await make_cluster(size=2, relayed=[0], isolated=can_isolate())
    cut_off = cluster.hosts[0]
    await create_on(http, cut_off, ["s0", "s1"])
    await watcher.until(lambda live: "s0" in live and "s1" in live)
    await asyncio.to_thread(cluster.relays[0].cut, mode)
    # Fenced, and its sessions taken by the peer: nothing is left for it to do.
    await wait_moved_off(http, cluster, cut_off, ["s0", "s1"], TAKEOVER)
    started = time.monotonic()
    code = await asyncio.to_thread(cut_off.terminate, 30)
    elapsed = time.monotonic() - started
    assert code == 0 and elapsed < 10, f"exit {code} after {elapsed:.1f}s\n{cut_off.log()[-3000:]}"
    watcher.assert_never_two()
