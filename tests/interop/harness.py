"""Drive the real Codex CLI (``@openai/codex`` 0.169.0, 0.171.0) against local fakes on loopback.

Nothing here reaches past loopback: the token endpoint is the kit's ``FakeAuthServer``
(``CODEX_REFRESH_TOKEN_URL_OVERRIDE``), whoami goes to ``CODEX_AUTHAPI_BASE_URL``, and the
ChatGPT backend (``chatgpt_base_url``, ``openai_base_url``) is :class:`Backend`, an HTTPS fake:
Codex 0.169's ``account/read`` first asks ``/wham/accounts/check`` which backend origin serves the
account ("workspace routing") and accepts only an ``https`` origin, so the fake serves TLS with a
certificate from a throwaway CA passed as ``CODEX_CA_CERTIFICATE``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import fcntl
import json
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import attrs
from aiohttp import web

from aioscopedauth.testing import AUTH_CLAIM, make_jwt

from processes import spawned

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from aioscopedauth import AuthDotJson
    from aioscopedauth.testing import FakeAuthServer

CODEX_VERSION = os.environ.get("AIOSCOPEDAUTH_CODEX_VERSION", "0.169.0")
"""The release under test (``nox -s interop`` runs each pinned one and says which)."""
CODEX_BIN_ENV = "AIOSCOPEDAUTH_CODEX_BIN"
"""The path of the real ``codex`` binary; the nox session ``interop`` sets it."""

AGENT_IDENTITY_ISSUER = "https://chatgpt.com/codex-backend/agent-identity"
AGENT_IDENTITY_AUDIENCE = "codex-app-server"
DEADLINE = 20.0
"""Seconds any bounded wait of this suite allows before failing."""


def codex_binary() -> Path | None:
    """The binary named by ``AIOSCOPEDAUTH_CODEX_BIN``, if set."""
    value = os.environ.get(CODEX_BIN_ENV)
    return Path(value) if value else None


def skip_reason() -> str | None:
    """Why the interop suite cannot run here, or ``None``."""
    binary = codex_binary()
    if binary is None:
        return (
            f"{CODEX_BIN_ENV} is not set: run `nox -s interop`, which installs "
            f"@openai/codex@{CODEX_VERSION} with npm and sets it"
        )
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return f"{CODEX_BIN_ENV}={binary} is not an executable file"
    if shutil.which("openssl") is None:
        return "openssl is not on PATH (the fake ChatGPT backend needs a TLS certificate)"
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    openssl = shutil.which("openssl")
    assert openssl is not None
    done = subprocess.run(
        [openssl, *args], input=stdin, capture_output=True, check=True, timeout=60
    )
    return done.stdout


@attrs.frozen
class Tls:
    """A throwaway CA, a leaf certificate for 127.0.0.1 and an RSA key for JWTs."""

    ca: Path
    cert: Path
    key: Path
    rsa_key: Path

    @classmethod
    def make(cls, folder: Path) -> Tls:
        """Create the files in ``folder`` with the openssl CLI."""
        folder.mkdir(parents=True, exist_ok=True)
        ca, ca_key = folder / "ca.pem", folder / "ca.key"
        cert, key, csr = folder / "cert.pem", folder / "key.pem", folder / "leaf.csr"
        ext = folder / "leaf.ext"
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        _openssl(
            "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca),
            "-days", "2", "-subj", "/CN=aioscopedauth interop CA",
        )  # fmt: skip
        _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
        # rustls refuses a CA certificate used as the server's own: sign a real leaf.
        ext.write_text(
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
        )  # fmt: skip
        rsa_key = folder / "rsa.pem"
        _openssl("genrsa", "-out", str(rsa_key), "2048")
        return cls(ca=ca, cert=cert, key=key, rsa_key=rsa_key)

    def named_context(self, *names: str) -> ssl.SSLContext:
        """A server-side TLS context with a new leaf for DNS ``names``, signed by the CA."""
        folder = self.ca.parent
        stem = "-".join(names).replace("*", "any")[:60]
        key, csr, cert = folder / f"{stem}.key", folder / f"{stem}.csr", folder / f"{stem}.pem"
        ext = folder / f"{stem}.ext"
        if not cert.exists():
            ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
            _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=fake")
            sans = ",".join(f"DNS:{name}" for name in names)
            ext.write_text(
                f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            )
            _openssl(
                "x509", "-req", "-in", str(csr), "-CA", str(self.ca),
                "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-out", str(cert),
                "-days", "2", "-extfile", str(ext),
            )  # fmt: skip
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    def server_context(self) -> ssl.SSLContext:
        """A server-side TLS context with the leaf certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def jwks(self) -> dict[str, Any]:
        """The RSA key's public half as a JWK set (kid ``k1``)."""
        out = _openssl("rsa", "-in", str(self.rsa_key), "-noout", "-modulus").decode()
        modulus = bytes.fromhex(out.strip().split("=", 1)[1])
        return {
            "keys": [
                {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": _b64(modulus)}
                | {"e": "AQAB"}
            ]
        }

    def agent_identity_jwt(self, **claims: Any) -> str:
        """An RS256 agent-identity JWT as Codex 0.169 verifies it (issuer, audience, kid)."""
        now = int(time.time())
        body = {
            "iss": AGENT_IDENTITY_ISSUER,
            "aud": AGENT_IDENTITY_AUDIENCE,
            "iat": now,
            "exp": now + 3600,
            "agent_runtime_id": "agent-runtime-1",
            "agent_private_key": base64.b64encode(b"not-a-real-key").decode(),
            "account_id": "acct-agent",
            "chatgpt_user_id": "user-agent",
            "email": "agent@example.com",
            "plan_type": "pro",
            "chatgpt_account_is_fedramp": False,
        } | claims
        head = {"alg": "RS256", "typ": "JWT", "kid": "k1"}
        signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(body).encode())}"
        signature = _openssl(
            "dgst", "-sha256", "-sign", str(self.rsa_key), stdin=signing_input.encode()
        )
        return f"{signing_input}.{_b64(signature)}"


@attrs.define(eq=False)
class Backend:
    """A fake ChatGPT backend over HTTPS on 127.0.0.1: enough for ``account/read``.

    ``/wham/accounts/check`` lists ``account_ids`` with this backend as their origin;
    ``/agent-identities/jwks`` serves the JWK set; everything else answers 404. Every request's
    path and bearer are recorded.
    """

    tls: Tls
    account_ids: list[str] = attrs.field(factory=lambda: ["acct-1"])
    requests: list[tuple[str, str | None]] = attrs.field(factory=list)
    _jwks: dict[str, Any] = attrs.field(factory=dict)
    _runner: web.AppRunner | None = None
    _port: int = 0

    @property
    def url(self) -> str:
        """The origin, ``https://127.0.0.1:PORT``."""
        return f"https://127.0.0.1:{self._port}"

    def bearers(self, suffix: str) -> list[str | None]:
        """The bearers sent to paths ending with ``suffix``."""
        return [bearer for path, bearer in self.requests if path.endswith(suffix)]

    async def start(self) -> None:
        """Listen on a free port."""
        self._jwks = self.tls.jwks()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls.server_context())
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        """Start."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop."""
        await self.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        bearer = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        self.requests.append((request.path, bearer))
        if request.path.endswith("/wham/accounts/check"):
            return web.json_response(self._accounts_check())
        if request.path.endswith("/agent-identities/jwks"):
            return web.json_response(self._jwks)
        return web.json_response({"detail": "not found"}, status=404)

    def _accounts_check(self) -> dict[str, Any]:
        # The shape Codex 0.169 parses: a list of accounts, each with the https origin that
        # serves it and a routing policy ("NO_CONSTRAINT", "us" or "us_cr").
        entries = [
            {
                "id": account,
                "plan_type": "pro",
                "structure": "personal",
                "workspace_backend_origin": self.url,
                "account_routing_override": "us",
            }
            for account in self.account_ids
        ]
        return {"accounts": entries, "account_ordering": list(self.account_ids)}


@attrs.frozen
class ForeignRequest:
    """One request that reached :class:`ForeignHosts`."""

    host: str
    method: str
    path: str
    content_type: str | None
    authorization: str | None
    form: dict[str, str]


@attrs.define(eq=False)
class ForeignHosts:
    """Public hosts Codex hard-codes, answered on loopback through an HTTP ``CONNECT`` proxy.

    Workload identity exchanges its token at ``https://auth.openai.com/oauth/token`` and only
    with production ChatGPT routing: no variable points either at a fake. Codex honours
    ``HTTPS_PROXY``, so this proxy takes every ``CONNECT``, records it, tunnels the hosts in
    :attr:`hosts` to a local HTTPS fake (a certificate from the throwaway CA, for those names)
    and refuses every other host (403). Nothing leaves loopback.
    """

    tls: Tls
    hosts: tuple[str, ...] = ("auth.openai.com", "chatgpt.com", "api.openai.com")
    token_answer: tuple[int, dict[str, Any]] = (400, {"error": "invalid_grant"})
    connects: list[str] = attrs.field(factory=list)
    requests: list[ForeignRequest] = attrs.field(factory=list)
    _runner: web.AppRunner | None = None
    _proxy: asyncio.Server | None = None
    _fake_port: int = 0
    _tunnels: set[asyncio.Task[None]] = attrs.field(factory=set)

    @property
    def proxy_url(self) -> str:
        """The proxy, ``http://127.0.0.1:PORT`` (for ``HTTPS_PROXY``)."""
        assert self._proxy is not None
        return f"http://127.0.0.1:{self._proxy.sockets[0].getsockname()[1]}"

    def env(self) -> dict[str, str]:
        """The variables that send Codex's public-host traffic here and loopback direct."""
        return {
            "HTTPS_PROXY": self.proxy_url,
            "HTTP_PROXY": self.proxy_url,
            "NO_PROXY": "127.0.0.1,localhost",
        }

    async def __aenter__(self) -> Self:
        """Start the fake and the proxy."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = self.tls.named_context(*self.hosts)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self._fake_port = int(self._runner.addresses[0][1])
        self._proxy = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop both."""
        if self._proxy is not None:
            self._proxy.close()
        for task in list(self._tunnels):
            task.cancel()
        await asyncio.gather(*self._tunnels, return_exceptions=True)
        if self._proxy is not None:
            await self._proxy.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tunnels.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            self.connects.append(line)
            verb, target, *_ = [*line.split(), "", ""]
            if verb != "CONNECT" or target.rsplit(":", 1)[0] not in self.hosts:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._fake_port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tunnels.discard(task)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form = dict(await request.post()) if request.method == "POST" else {}
        self.requests.append(
            ForeignRequest(
                host=request.host,
                method=request.method,
                path=request.path,
                content_type=request.content_type,
                authorization=request.headers.get("Authorization"),
                form={key: str(value) for key, value in form.items()},
            )
        )
        if request.path == "/oauth/token":
            status, body = self.token_answer
            return web.json_response(body, status=status)
        return web.json_response({"detail": "not found"}, status=404)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@attrs.frozen
class Result:
    """A finished ``codex`` command."""

    returncode: int
    stdout: str
    stderr: str


@attrs.define(eq=False)
class Codex:
    """The real ``codex`` binary on one home, pointed at the local fakes only."""

    binary: Path
    home: Path
    user_home: Path
    server: FakeAuthServer
    backend: Backend
    authapi_url: str
    extra_env: dict[str, str] = attrs.field(factory=dict)
    """Variables added to :meth:`env` (the logins from the environment under test)."""

    def env(self) -> dict[str, str]:
        """The whole environment of a Codex process (nothing inherited but PATH)."""
        return self.extra_env | {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.user_home),
            "CODEX_HOME": str(self.home),
            "CODEX_REFRESH_TOKEN_URL_OVERRIDE": self.server.token_url,
            "CODEX_AUTHAPI_BASE_URL": self.authapi_url,
            "CODEX_CA_CERTIFICATE": str(self.backend.tls.ca),
            "CODEX_AGENT_IDENTITY_JWKS_BASE_URL": f"{self.backend.url}/jwks",
            "NO_COLOR": "1",
        }

    def overrides(self, *, chatgpt_backend: bool = True) -> list[str]:
        """``-c`` options that keep every ChatGPT call on the fake backend and auth in the file.

        ``chatgpt_backend=False`` leaves ``chatgpt_base_url`` alone: an agent-identity login
        refuses any ChatGPT environment but production and staging (it only fetches the JWK
        set, from ``CODEX_AGENT_IDENTITY_JWKS_BASE_URL``).
        """
        base = self.backend.url
        options = ["-c", f'openai_base_url="{base}/v1"', "-c", 'cli_auth_credentials_store="file"']
        if chatgpt_backend:
            options += ["-c", f'chatgpt_base_url="{base}/backend-api/"']
        return options

    async def run(
        self, *args: str, stdin: str | None = None, chatgpt_backend: bool = True
    ) -> Result:
        """Run ``codex [overrides] ARGS`` to completion (bounded by :data:`DEADLINE`)."""
        async with spawned(
            str(self.binary),
            *self.overrides(chatgpt_backend=chatgpt_backend),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(),
        ) as proc:
            out, err = await asyncio.wait_for(
                proc.communicate(None if stdin is None else stdin.encode()), DEADLINE
            )
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    @contextlib.asynccontextmanager
    async def app_server(self) -> AsyncIterator[AppServer]:
        """A running ``codex app-server`` after its ``initialize`` handshake."""
        proc = await asyncio.create_subprocess_exec(
            str(self.binary),
            *self.overrides(),
            "app-server",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=self.env(),
            limit=16 * 1024 * 1024,
        )
        server = AppServer(proc)
        try:
            await server.start()
            yield server
        finally:
            await server.close()


@attrs.define(eq=False)
class AppServer:
    """A JSON-RPC client of ``codex app-server`` (one JSON object a line over stdio)."""

    proc: asyncio.subprocess.Process
    _pending: dict[int, asyncio.Future[dict[str, Any]]] = attrs.field(factory=dict)
    _next_id: int = 1
    _reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start reading and do the handshake (``initialize``, then ``initialized``)."""
        self._reader = asyncio.create_task(self._read())
        answer = await self.request(
            "initialize",
            {
                "clientInfo": {"name": "aioscopedauth-interop", "version": "1"},
                # Bedrock logins are experimental API in 0.169.
                "capabilities": {"experimentalApi": True},
            },
        )
        assert "result" in answer, answer
        await self._send({"jsonrpc": "2.0", "method": "initialized"})

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return the whole answer (``result`` or ``error``)."""
        ident = self._next_id
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._send({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
        return await asyncio.wait_for(future, DEADLINE)

    async def read_account(self, *, refresh: bool = False) -> dict[str, Any]:
        """``account/read`` with ``{"refreshToken": refresh}``."""
        return await self.request("account/read", {"refreshToken": refresh})

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self.proc.stdin.drain()

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            ident = message.get("id")
            future = self._pending.pop(ident, None) if isinstance(ident, int) else None
            if future is not None and not future.done() and "method" not in message:
                future.set_result(message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError("codex app-server exited"))

    async def close(self) -> None:
        """Close stdin and wait for the process (killed after :data:`DEADLINE`)."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), DEADLINE)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader


# -- files and locks -----------------------------------------------------------------------


def file_mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return path.stat().st_mode & 0o777


def stray_temp_files(home: Path) -> list[str]:
    """Temp files a save left behind (Codex's ``.auth-*`` or the library's ``.auth.json.*``)."""
    return sorted(p.name for p in home.glob(".auth*") if p.name not in {".", ".."})


def is_locked_by_other(path: Path) -> bool:
    """Whether another open file description holds an ``flock`` on ``path`` now."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in {errno.EWOULDBLOCK, errno.EAGAIN}:
            return True
        raise
    finally:
        os.close(fd)  # closing releases a lock we may have taken
    return False


def opened_here(path: Path) -> bool:
    """Whether this process has ``path`` open now (the library waiting for a lock on it)."""
    for entry in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if entry.readlink() == path:
                return True
    return False


@contextlib.contextmanager
def hold_flock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600 like Codex) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` every few milliseconds until it holds (fails after DEADLINE)."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            msg = f"timed out waiting until {what}"
            raise AssertionError(msg)
        await asyncio.sleep(0.002)


def is_codex_request(body: Any) -> bool:
    """Codex's token requests carry ``refresh_reason``; the library's do not."""
    return isinstance(body, dict) and "refresh_reason" in body


def on_token_request(
    server: FakeAuthServer, hook: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    """Install ``hook`` as the server's token hook (awaited before each answer)."""
    server.token_hook = hook


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``."""
    value = json.loads(path.read_bytes())
    assert isinstance(value, dict)
    return value


def expiring_login(
    server: FakeAuthServer, seconds: int, *, fractional: bool = False
) -> AuthDotJson:
    """A valid login whose access token expires ``seconds`` from now (an integer ``exp``).

    ``fractional=True`` adds half a second, making ``exp`` fractional: Codex 0.169 ignores
    such an ``exp`` (it never refreshes that token proactively; the kit's own tokens have one),
    while the library honours it.
    """
    login = server.login()
    assert login.tokens is not None
    exp: float = int(time.time()) + seconds
    if fractional:
        exp += 0.5
    claims = {"exp": exp, AUTH_CLAIM: {"chatgpt_account_id": "acct-1"}}
    return attrs.evolve(login, tokens=attrs.evolve(login.tokens, access_token=make_jwt(claims)))


def kit(obj: object, name: str) -> Any:
    """An attribute that newer versions of the library or kit have (looked up at run time).

    The interop suite is written against the library with issue 10 done; reaching for its new
    names this way keeps the suite importable and type-checked before they land.
    """
    return getattr(obj, name)
