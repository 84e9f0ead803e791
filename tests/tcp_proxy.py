"""A TCP proxy on 127.0.0.1 that can hold a server's replies or drop connections silently.

It stands between a real client and a real server (asyncio streams, in the test's own loop) to
make the network faults a fleet meets in production: replies that arrive late (a stalled
server, a slow link) and connections that die without a FIN or an RST (a NAT or a firewall
that forgot the flow). Nothing of the Redis protocol is parsed or faked: bytes pass through.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

import attrs

_CHUNK = 65536


@attrs.define(eq=False)
class _Link:
    """One client connection and its connection to the server."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    silent: bool = False
    """Dropped without a word: bytes read from either side are thrown away, nothing closes."""
    requests: asyncio.Event = attrs.Factory(asyncio.Event)
    """Set while requests flow to the server (cleared: they wait in the "network")."""
    tasks: list[asyncio.Task[None]] = attrs.Factory(list)


@attrs.define(eq=False)
class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port`` on 127.0.0.1.

    Use as ``async with TcpProxy(target_port) as proxy:``, then point the client at
    ``proxy.port``.

    Args:
        target_port: The server's port on 127.0.0.1.
    """

    target_port: int
    port: int = attrs.field(default=0, init=False)
    connections: int = attrs.field(default=0, init=False)
    """Client connections accepted so far."""
    held: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    """Set once a reply arrived from the server while replies are held."""
    requests_held: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    """Set once a request arrived from a client while its connection's requests are held."""
    accepted: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    """Set whenever a client connection is accepted (clear it, then wait for the next one)."""
    answered: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    """Set whenever bytes arrive from the server (clear it, then wait for the next answer)."""
    _flowing: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    black_hole: bool = attrs.field(default=False, init=False)
    """While set, new connections are accepted and then dropped silently too."""
    _links: list[_Link] = attrs.Factory(list)
    _server: asyncio.Server | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        """Replies flow until told otherwise."""
        self._flowing.set()

    def url(self, path: str = "/0") -> str:
        """``redis://127.0.0.1:PORT/0`` through the proxy."""
        return f"redis://127.0.0.1:{self.port}{path}"

    def hold_replies(self) -> None:
        """Keep every reply from the server (on every connection) until :meth:`release_replies`.

        The server still gets and runs every command: only the answers wait.
        """
        self.held.clear()
        self._flowing.clear()

    def release_replies(self) -> None:
        """Send the held replies, and let later ones through at once."""
        self._flowing.set()

    def hold_requests(self) -> int:
        """Keep the requests of every connection open now on their way, until released.

        Connections made later are not held: a request on one of those can overtake a held
        one, as on a real network where one path is slow.

        Returns:
            How many connections are held.
        """
        self.requests_held.clear()
        for link in self._links:
            link.requests.clear()
        return len(self._links)

    def release_requests(self) -> None:
        """Let the held requests reach the server (even where their client has gone)."""
        for link in self._links:
            link.requests.set()

    def drop_silently(self) -> int:
        """Make every open connection a black hole: no byte passes either way, none is closed.

        Connections made later are forwarded as usual (the NAT forgot the old flows only).

        Returns:
            How many connections were dropped.
        """
        for link in self._links:
            link.silent = True
        return len(self._links)

    async def __aenter__(self) -> Self:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for link in self._links:
            for task in link.tasks:
                task.cancel()
            for writer in (link.client, link.server):
                writer.close()
        tasks = [task for link in self._links for task in link.tasks]
        if tasks:
            await asyncio.wait(tasks)
        for link in self._links:
            for writer in (link.client, link.server):
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        self._links.clear()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.accepted.set()
        try:
            server_reader, server_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.close()
            return
        link = _Link(writer, server_writer, silent=self.black_hole)
        link.requests.set()
        self._links.append(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, server_writer, replies=False)),
            asyncio.create_task(self._pump(link, server_reader, writer, replies=True)),
        ]

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        replies: bool,
    ) -> None:
        try:
            while chunk := await reader.read(_CHUNK):
                if replies:
                    self.answered.set()
                    if not self._flowing.is_set():
                        self.held.set()
                        await self._flowing.wait()
                elif not link.requests.is_set():
                    self.requests_held.set()
                    await link.requests.wait()
                if link.silent:
                    continue  # a black hole: swallowed, and nobody is told
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            if not link.silent:
                # This side closed: pass the FIN on (a half-close, as a real network does; the
                # answer to a last request can still come back the other way).
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                    else:
                        writer.close()
