"""``wxcode-pty serve`` behind a reverse proxy, in real processes over real sockets.

``--base-path`` serves everything under a prefix, ``--unix-socket`` listens on a socket file,
``--tls-cert``/``--tls-key`` serve HTTPS and WSS, ``--allowed-host``/``--allowed-origin`` let
the proxy's public name through the Host and Origin checks. Where HAProxy or nginx is installed,
the server is also used through them as the README's configurations set them up.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from http.cookies import Morsel
from pathlib import Path

import aiohttp
import pytest

from .conftest import Attached
from .processes import PROMPT, REPO, SHELL, Process, Server, free_port, run_cli
from .test_cli import one_error_line

STATIC = REPO / "wxcode_pty" / "static"

COOKIE = "wxcode_pty_token"
PROXY_OPTIONS = [
    "--base-path",
    "--unix-socket",
    "--tls-cert",
    "--tls-key",
    "--allowed-host",
    "--allowed-origin",
]


async def started(servers: list[Server], server: Server) -> Server:
    servers.append(server)
    return await asyncio.to_thread(server.started)


async def serve(servers: list[Server], folder: Path, *args: str) -> Server:
    return await started(servers, Server(folder, free_port(), list(args)))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: the cookie comes from 127.0.0.1, which the default jar would drop.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


@pytest.fixture
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for socket files: their paths must stay under 108 bytes."""
    folder = Path(tmp_path_factory.mktemp("s", numbered=True))
    if len(str(folder)) > 80:
        pytest.skip(f"temporary folder too long for a Unix socket: {folder}")
    yield folder


def certificate(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A throw-away self-signed certificate for localhost and 127.0.0.1, and its key."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


async def shell_session(http: aiohttp.ClientSession, url: str, origin: str) -> None:
    """Open a terminal at ``url``, type into it and read the answer back."""
    ws = await http.ws_connect(url, headers={"Origin": origin})
    try:
        client = await Attached(ws).handshake()
        await client.read_until(PROMPT.encode())
        await ws.send_bytes(b"echo typed-$((6*7))\r")
        await client.read_until(b"typed-42\r\n")
    finally:
        await ws.close()


async def status(http: aiohttp.ClientSession, method: str, url: str, **headers: str) -> int:
    async with http.request(method, url, headers=headers, allow_redirects=False) as response:
        await response.read()
        return response.status


# -- --base-path -------------------------------------------------------------------------------


async def test_base_path_serves_everything_under_the_prefix(
    servers: list[Server], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await serve(servers, tmp_path, "--base-path", "/pty/", "--command", SHELL)
    token = server.token
    assert token and server.url == f"{server.origin}/pty/?token={token}"
    prefix = f"{server.origin}/pty"

    # The prefix without its slash: the page's relative URLs need it, the query is kept.
    async with http.get(f"{prefix}?token={token}&project=demo", allow_redirects=False) as got:
        assert got.status == 308
        assert got.headers["Location"] == f"/pty/?token={token}&project=demo"
    # The token is traded for a cookie that is sent under the prefix only.
    async with http.get(f"{prefix}/?token={token}&project=demo", allow_redirects=False) as got:
        assert got.status == 302
        assert got.headers["Location"] == "/pty/?project=demo"
        cookie = got.cookies[COOKIE]
        assert cookie.value == token and cookie["path"] == "/pty/"
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]

    async with http.get(f"{prefix}/?project=demo") as got:
        assert got.status == 200
        page = await got.text()
    # Everything the page loads is relative to it, and is there under the prefix.
    assets = re.findall(r'(?:src|href)="([^"#?]+)"', page)
    assert assets and not [a for a in assets if a.startswith("/") or "://" in a], assets
    for asset in assets:
        assert await status(http, "GET", f"{prefix}/{asset}") == 200, asset
    # The page's modules (the connection's WebSocket and REST calls among them) build their
    # URLs relative to the page too.
    for module in sorted(STATIC.glob("*.js")):
        async with http.get(f"{prefix}/static/{module.name}") as got:
            assert got.status == 200, module.name
            script = await got.text()
        for absolute in ("'/ws/", '"/ws/', "`/ws/", "'/api/", '"/api/', "`/api/"):
            assert absolute not in script, f"{module.name} uses an absolute URL: {absolute}"

    await shell_session(http, f"{prefix}/ws/demo", server.origin)
    async with http.get(f"{prefix}/api/sessions/demo") as got:
        assert got.status == 200 and (await got.json())["status"] == "running"
    async with http.get(f"{prefix}/metrics") as got:
        assert got.status == 200 and "wxcode_pty" in await got.text()

    # Nothing is served outside the prefix, even with valid credentials.
    bearer = {"Authorization": f"Bearer {token}", "Origin": server.origin}
    for method, path in [
        ("GET", "/"),
        ("GET", f"/?token={token}"),
        ("GET", "/api/sessions"),
        ("GET", "/api/sessions/demo"),
        ("POST", "/api/sessions/other"),
        ("GET", "/metrics"),
        ("GET", "/static/terminal.js"),
        ("GET", "/ws/demo"),
        ("GET", "/ptyx/api/sessions"),
    ]:
        assert await status(http, method, f"{server.origin}{path}", **bearer) == 404, path
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"{server.origin}/ws/demo", headers=bearer)
    assert refused.value.status == 404
    assert not (tmp_path / "projects" / "other").exists()


# -- --unix-socket -----------------------------------------------------------------------------


async def test_unix_socket_replaces_a_stale_file_serves_and_is_removed(
    servers: list[Server], tmp_path: Path, short_dir: Path
) -> None:
    path = short_dir / "pty.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nothing listens: what a killed server leaves
    assert path.is_socket()

    server = await started(
        servers, Server(tmp_path, 0, ["--command", SHELL, "--base-path", "/pty"], unix_socket=path)
    )
    assert f"listening on unix socket {path}" in server.lines
    quoted = str(path).replace("/", "%2F")
    assert server.url == f"http+unix://{quoted}/pty/?token={server.token}"

    # A second server on the same path is refused and leaves the first one's socket alone.
    second = await asyncio.to_thread(
        run_cli, server.argv[server.argv.index("--unix-socket") :], tmp_path
    )
    assert "in use" in one_error_line(second)

    bearer = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=str(path)), headers=bearer
    ) as http:
        # What a client of the socket (a proxy, curl --unix-socket) sends: Host localhost.
        await shell_session(http, "http://localhost/pty/ws/demo", "http://localhost")
        async with http.get("http://localhost/pty/api/sessions") as got:
            assert got.status == 200
            assert [s["output_project_id"] for s in await got.json()] == ["demo"]

    assert await asyncio.to_thread(server.stop) == 0, server.describe()
    assert not path.exists(), "the socket file was left behind"


def test_unix_socket_refuses_to_replace_a_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    line = one_error_line(
        run_cli(["--db", "db.sqlite", "--command", "cat", "--unix-socket", str(path)], tmp_path)
    )
    assert "not a socket" in line and str(path) in line
    assert path.read_text() == "keep me"


# -- --tls-cert / --tls-key --------------------------------------------------------------------


async def test_tls_serves_https_and_wss_with_a_secure_cookie(
    servers: list[Server], tmp_path: Path
) -> None:
    cert, key = certificate(tmp_path)
    server = await serve(
        servers, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), "--command", SHELL
    )
    origin = f"https://127.0.0.1:{server.port}"
    assert server.url == f"{origin}/?token={server.token}"
    trusted = ssl.create_default_context(cafile=str(cert))

    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), connector=aiohttp.TCPConnector(ssl=trusted)
    ) as https:
        async with https.get(server.url, allow_redirects=False) as got:
            assert got.status == 302 and got.headers["Location"] == "/"
            cookie = got.cookies[COOKIE]
            assert cookie["secure"] and cookie["httponly"] and cookie["path"] == "/"
        async with https.get(f"{origin}/") as got:
            assert got.status == 200 and "xterm" in await got.text()
        await shell_session(https, f"wss://127.0.0.1:{server.port}/ws/demo", origin)
        # The page's origin is the https one: a plain http origin is foreign.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await https.ws_connect(
                f"wss://127.0.0.1:{server.port}/ws/demo",
                headers={"Origin": f"http://127.0.0.1:{server.port}"},
            )
        assert refused.value.status == 403

    # A client that does not trust the certificate gets nowhere.
    async with aiohttp.ClientSession() as untrusting:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await untrusting.get(f"{origin}/api/sessions")


# -- --allowed-host / --allowed-origin ---------------------------------------------------------


async def test_allowed_host_and_origin_let_a_proxys_public_name_through(
    servers: list[Server], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """What a proxy that terminates TLS passes on: Host pty.example.com, Origin https://..."""
    public = {"Host": "pty.example.com", "Origin": "https://pty.example.com"}
    plain = await serve(servers, tmp_path / "plain", "--no-token", "--command", SHELL)
    assert await status(http, "GET", f"{plain.origin}/api/sessions", **public) == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(
            f"{plain.origin}/ws/demo",
            headers={"Host": "127.0.0.1", "Origin": "https://pty.example.com"},
        )
    assert refused.value.status == 403

    server = await serve(
        servers, tmp_path / "proxied", "--no-token", "--command", SHELL,
        "--allowed-host", "PTY.example.com", "--allowed-origin", "https://pty.example.com/",
    )  # fmt: skip
    assert await status(http, "GET", f"{server.origin}/api/sessions", **public) == 200
    ws = await http.ws_connect(f"{server.origin}/ws/demo", headers=public)
    client = await Attached(ws).handshake()
    await ws.send_bytes(b"echo proxied-$((6*7))\r")
    await client.read_until(b"proxied-42\r\n")
    await ws.close()
    # The server's own local URL keeps working; other names and origins stay refused.
    await shell_session(http, f"{server.origin}/ws/demo", server.origin)
    other = {"Host": "evil.example", "Origin": server.origin}
    assert await status(http, "GET", f"{server.origin}/api/sessions", **other) == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(
            f"{server.origin}/ws/demo",
            headers={"Host": "pty.example.com", "Origin": "http://pty.example.com"},
        )
    assert refused.value.status == 403


# -- usage errors ------------------------------------------------------------------------------


def test_help_documents_the_proxy_options(tmp_path: Path) -> None:
    result = run_cli(["serve", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for option in PROXY_OPTIONS:
        assert re.search(rf"^\s+{re.escape(option)}\b.*\S", result.stdout, re.M), option


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--base-path", "pty"], "must start with /"),
        (["--base-path", "/a/../b"], "--base-path"),
        (["--base-path", "/a//b"], "--base-path"),
        (["--base-path", "/a b"], "--base-path"),
        (["--base-path", "/./"], "--base-path"),
        (["--tls-cert", "{tmp}/localhost.crt"], "go together"),
        (["--tls-key", "{tmp}/localhost.key"], "go together"),
        (["--tls-cert", "{tmp}/missing.crt", "--tls-key", "{tmp}/localhost.key"], "cannot read"),
        (["--tls-cert", "{tmp}/localhost.crt", "--tls-key", "{tmp}/other.key"], "does not belong"),
        (["--tls-cert", "{tmp}/localhost.key", "--tls-key", "{tmp}/localhost.key"], "PEM"),
        (["--unix-socket", "{tmp}/s.sock", "--port", "9000"], "not with --host/--port"),
        (["--unix-socket", "{tmp}/s.sock", "--host", "127.0.0.1"], "not with --host/--port"),
        (["--allowed-host", "pty.example.com:443"], "--allowed-host"),
        (["--allowed-host", "https://pty.example.com"], "--allowed-host"),
        (["--allowed-origin", "pty.example.com"], "--allowed-origin"),
        (["--allowed-origin", "https://pty.example.com/app"], "--allowed-origin"),
    ],
)
def test_proxy_usage_errors_are_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    certificate(tmp_path)
    certificate(tmp_path, "other")
    argv = [arg.format(tmp=tmp_path) for arg in args]
    line = one_error_line(run_cli(["--db", "db.sqlite", "--command", "cat", *argv], tmp_path))
    assert needle in line, line
    assert not (tmp_path / "db.sqlite").exists(), "nothing is created for a usage error"
    assert not (tmp_path / "s.sock").exists()


# -- through real reverse proxies (the README's configurations) --------------------------------

HAPROXY_CONFIG = """\
global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    # An open terminal is a WebSocket that may be quiet for a long time.
    timeout tunnel 1h
frontend www
    bind 127.0.0.1:{port}{tls}
    use_backend wxcode_pty if {{ path /pty }} || {{ path_beg /pty/ }}
backend wxcode_pty
    server pty {upstream}
"""

NGINX_CONFIG = """\
daemon off;
master_process off;
pid {folder}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream wxcode_pty {{
        server {upstream};
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};

        location /pty/ {{
            proxy_pass http://wxcode_pty;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }}
    }}
}}
"""


@pytest.fixture
def proxies() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for proxy in started:
        proxy.stop(timeout=10)


async def start_proxy(proxies: list[Process], argv: list[str], folder: Path, port: int) -> Process:
    """Start a proxy in the foreground and wait (with a deadline) until it accepts."""
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    proxy = Process(argv, folder / f"{Path(argv[0]).name}.stderr")
    proxies.append(proxy)
    async with asyncio.timeout(15):
        while True:
            assert proxy.proc.poll() is None, proxy.describe()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return proxy


async def use_through_proxy(http: aiohttp.ClientSession, public: str, token: str) -> Morsel[str]:
    """The token URL, the page, a terminal and the API, all at ``public``/pty/; the cookie."""
    async with http.get(f"{public}/pty?token={token}&project=demo", allow_redirects=False) as got:
        assert got.status in (301, 308), got.status
        assert got.headers["Location"].endswith(f"/pty/?token={token}&project=demo")
    async with http.get(f"{public}/pty/?token={token}&project=demo", allow_redirects=False) as got:
        assert got.status == 302 and got.headers["Location"] == "/pty/?project=demo"
        cookie = got.cookies[COOKIE]
        assert cookie["path"] == "/pty/"
    async with http.get(f"{public}/pty/?project=demo") as got:
        assert got.status == 200 and "xterm" in await got.text()
    ws_public = public.replace("http", "ws", 1)
    await shell_session(http, f"{ws_public}/pty/ws/demo", public)
    async with http.get(f"{public}/pty/api/sessions/demo") as got:
        assert got.status == 200 and (await got.json())["status"] == "running"
    return cookie


async def test_through_haproxy_to_a_unix_socket_under_a_prefix(
    servers: list[Server], proxies: list[Process], tmp_path: Path, short_dir: Path
) -> None:
    sock = short_dir / "pty.sock"
    server = await started(
        servers, Server(tmp_path, 0, ["--base-path", "/pty", "--command", SHELL], unix_socket=sock)
    )
    assert server.token
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, tls="", upstream=f"unix@{sock}"))
    await start_proxy(proxies, ["haproxy", "-db", "-f", str(config)], tmp_path, port)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await use_through_proxy(http, f"http://127.0.0.1:{port}", server.token)


async def test_through_nginx_terminating_tls_under_a_prefix(
    servers: list[Server], proxies: list[Process], tmp_path: Path, short_dir: Path
) -> None:
    """nginx serves https://localhost:PORT/pty/ and talks plain HTTP to a Unix socket: the
    browser's origin is https, so the server is told it with --allowed-origin."""
    sock = short_dir / "pty.sock"
    port = free_port()
    public = f"https://localhost:{port}"
    args = ["--base-path", "/pty", "--allowed-origin", public, "--command", SHELL]
    server = await started(servers, Server(tmp_path, 0, args, unix_socket=sock))
    assert server.token
    cert, key = certificate(tmp_path)
    config = tmp_path / "nginx.conf"
    config.write_text(
        NGINX_CONFIG.format(folder=tmp_path, port=port, cert=cert, key=key, upstream=f"unix:{sock}")
    )
    argv = ["nginx", "-p", str(tmp_path), "-e", "stderr", "-c", str(config)]
    await start_proxy(proxies, argv, tmp_path, port)
    trusted = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(), connector=aiohttp.TCPConnector(ssl=trusted)
    ) as http:
        cookie = await use_through_proxy(http, public, server.token)
    # The server sees plain HTTP from the proxy, so it cannot mark the cookie Secure.
    assert not cookie["secure"]


async def test_through_haproxy_to_a_server_that_serves_tls_itself(
    servers: list[Server], proxies: list[Process], tmp_path: Path
) -> None:
    """HAProxy re-encrypts to wxcode-pty's own HTTPS (TLS at both): the cookie stays Secure."""
    cert, key = certificate(tmp_path)
    args = ["--base-path", "/pty", "--tls-cert", str(cert), "--tls-key", str(key)]
    server = await serve(servers, tmp_path, *args, "--command", SHELL)
    assert server.token
    port = free_port()
    combined = tmp_path / "haproxy.pem"
    combined.write_text(cert.read_text() + key.read_text())
    upstream = f"127.0.0.1:{server.port} ssl verify required ca-file {cert} sni str(localhost)"
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(port=port, tls=f" ssl crt {combined}", upstream=upstream)
    )
    await start_proxy(proxies, ["haproxy", "-db", "-f", str(config)], tmp_path, port)
    trusted = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(), connector=aiohttp.TCPConnector(ssl=trusted)
    ) as http:
        cookie = await use_through_proxy(http, f"https://localhost:{port}", server.token)
    assert cookie["secure"]
