"""FileBody: a file upload that survives a 401, streamed from disk, safe to cancel."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web

from aioscopedauth import AuthManager, AuthMiddleware, FileBody, RecoveryEvent
from aioscopedauth import _body as body_module
from aioscopedauth.testing import FakeAuthServer, serve_on_loopback, write_auth_json

from processes import spawned

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from aioscopedauth import OAuthConfig

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
MIB = 1024 * 1024


def _write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for _ in range(size // MIB):
            chunk = os.urandom(MIB)
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


def _handles(path: Path) -> list[str]:
    """The descriptors of this process open on ``path``."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if fd.readlink() == path:
                found.append(fd.name)
        except OSError:  # closed meanwhile (e.g. the listing's own descriptor)
            continue
    return found


async def _closes_finished() -> None:
    # Opens and closes of cancelled sends run on; wait until none is left (an open that
    # finishes submits its close). Finished ones are skipped: an earlier test's loop may have
    # closed before its futures' done callbacks took them out of the set.
    while pending := [work for work in body_module._BACKGROUND if not work.done()]:
        await asyncio.gather(*pending, return_exceptions=True)


@pytest.fixture
async def session(manager: AuthManager) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(middlewares=(AuthMiddleware(manager),)) as client:
        yield client


# The upload of the how-to (docs/examples/upload_file.py), run in its own process so that its
# memory is measured apart from the server's (which keeps the body it received).
_PROBE = """
import asyncio, importlib.util, json, sys, tracemalloc
from pathlib import Path
import aioscopedauth
from aioscopedauth import OAuthConfig

example, home, token_url, client_id, api, upload = sys.argv[1:]
spec = importlib.util.spec_from_file_location("upload_file", example)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

def rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)

async def main():
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    before = rss("VmRSS")
    tracemalloc.start()
    status = await module.upload(Path(home), OAuthConfig(token_url, client_id), api, Path(upload))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"status": status, "peak": peak, "rss_growth": rss("VmHWM") - before}))

asyncio.run(main())
"""


async def test_50_mb_upload_survives_a_revoked_token_in_bounded_memory(
    tmp_path: Path, home: Path, server: FakeAuthServer, oauth: OAuthConfig
) -> None:
    size = 50 * MIB
    upload = tmp_path / "dataset.bin"
    digest = _write_random(upload, size)
    write_auth_json(home, server.login())
    server.revoke_access_tokens()
    async with spawned(
        sys.executable,
        "-c",
        _PROBE,
        str(EXAMPLES / "upload_file.py"),
        str(home),
        oauth.token_url,
        oauth.client_id,
        server.url,
        str(upload),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    ) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["status"] == 200
    # Sent twice (rejected, then retried with the refreshed token); the server got every byte.
    assert (server.api_hits, server.api_rejections, server.refreshes) == (2, 1, 1)
    received = server.last_api_request
    assert received is not None
    assert received["method"] == "PUT"
    assert received["headers"]["Content-Length"] == str(size)
    assert hashlib.sha256(received["body"]).hexdigest() == digest
    # Streamed: the client never held the file (50 MiB) in memory, not even once.
    assert result["peak"] < 8 * MIB, result  # measured: 2.9 MB
    assert result["rss_growth"] < 16 * MIB, result  # measured: 3.7 MB


async def test_body_is_reopened_and_resent_after_a_401(
    tmp_path: Path, home: Path, server: FakeAuthServer, manager: AuthManager
) -> None:
    upload = tmp_path / "notes.txt"
    upload.write_bytes(b"line\n" * 100_000)
    write_auth_json(home, server.login())
    server.revoke_access_tokens()
    events: list[RecoveryEvent] = []
    middleware = AuthMiddleware(manager, origins=server.url, on_event=events.append)
    async with (
        aiohttp.ClientSession(middlewares=(middleware,)) as client,
        client.post(f"{server.url}/api/notes", data=FileBody(upload, chunk_size=4096)) as response,
    ):
        assert response.status == 200
    assert [e.outcome for e in events] == ["unchanged", "changed", "recovered"]
    received = server.last_api_request
    assert received is not None
    assert received["body"] == upload.read_bytes()
    assert received["headers"]["Content-Type"] == "text/plain"
    # Each send's file is closed in a worker thread as soon as it is done with; on a loaded
    # machine the first send's close may still be running when the response is in.
    await _closes_finished()
    assert _handles(upload) == []


def _truncate(path: Path) -> None:
    os.truncate(path, 1000)


def _append(path: Path) -> None:
    with path.open("ab") as handle:
        handle.write(b"more")


@pytest.mark.parametrize(
    ("change", "message"),
    [(_truncate, "1000 bytes now"), (_append, f"{MIB + 4} bytes now")],
    ids=["truncated", "appended"],
)
async def test_a_file_that_changes_size_between_sends_fails_the_request(
    tmp_path: Path,
    home: Path,
    server: FakeAuthServer,
    manager: AuthManager,
    change: Callable[[Path], None],
    message: str,
) -> None:
    upload = tmp_path / "data.bin"
    upload.write_bytes(b"x" * MIB)
    write_auth_json(home, server.login())
    server.revoke_access_tokens()

    def on_event(event: RecoveryEvent) -> None:
        if event.outcome == "changed":  # the retry comes next
            change(upload)

    middleware = AuthMiddleware(manager, on_event=on_event)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as client:
        with pytest.raises(aiohttp.ClientConnectionError) as raised:
            async with client.post(f"{server.url}/api/data", data=FileBody(upload)):
                pass
    cause = raised.value.__cause__
    assert isinstance(cause, RuntimeError)
    assert f"{upload} changed size during the upload: {MIB} bytes when" in str(cause)
    assert message in str(cause)
    assert server.api_rejections == 1
    received = server.last_api_request
    assert received is not None
    assert len(received["body"]) == MIB  # only the first, rejected send arrived whole
    assert _handles(upload) == []


async def test_a_file_that_shrinks_while_it_is_read_fails_the_request(tmp_path: Path) -> None:
    upload = tmp_path / "data.bin"
    upload.write_bytes(b"y" * (4 * MIB))
    first_chunk = asyncio.Event()
    shrunk = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.content.readexactly(64 * 1024)
        first_chunk.set()
        await shrunk.wait()
        await request.read()
        return web.Response()

    app = web.Application(client_max_size=8 * MIB)
    app.router.add_post("/up", handler)
    runner, url = await serve_on_loopback(app)
    try:
        async with aiohttp.ClientSession() as client:
            task = asyncio.create_task(
                client.post(f"{url}/up", data=FileBody(upload, chunk_size=64 * 1024))
            )
            await first_chunk.wait()
            os.truncate(upload, 100_000)
            shrunk.set()
            with pytest.raises(aiohttp.ClientConnectionError) as raised:
                await task
    finally:
        await runner.cleanup()
    assert "changed size during the upload" in str(raised.value.__cause__)
    assert "bytes now" in str(raised.value.__cause__)
    await _closes_finished()
    assert _handles(upload) == []


async def test_cancelling_a_send_while_the_file_is_opened_leaks_no_handle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeAuthServer
) -> None:
    upload = tmp_path / "slow-open.bin"
    upload.write_bytes(b"z" * 1000)
    entered = threading.Event()
    gate = threading.Event()
    real_open = os.open

    def gated_open(name: str, flags: int, *args: int) -> int:
        if name == str(upload):
            entered.set()
            gate.wait(30)  # the open is still under way in its thread when the task is cancelled
        return real_open(name, flags, *args)

    monkeypatch.setattr(os, "open", gated_open)  # only the upload's open waits
    async with aiohttp.ClientSession() as client:
        task = asyncio.create_task(client.post(f"{server.url}/api/x", data=FileBody(upload)))
        assert await asyncio.to_thread(entered.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        await _closes_finished()
    assert _handles(upload) == []


async def test_cancelling_an_upload_midway_leaks_no_handle(tmp_path: Path) -> None:
    upload = tmp_path / "big.bin"
    upload.write_bytes(os.urandom(8 * MIB))
    started = asyncio.Event()
    finish = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.content.readexactly(1024)
        started.set()
        await finish.wait()  # reads no more: the client is cancelled meanwhile
        return web.Response()

    app = web.Application()
    app.router.add_post("/up", handler)
    runner, url = await serve_on_loopback(app)
    try:
        async with aiohttp.ClientSession() as client:
            task = asyncio.create_task(client.post(f"{url}/up", data=FileBody(upload)))
            await started.wait()
            assert len(_handles(upload)) == 1  # streaming from an open file
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _closes_finished()
            assert _handles(upload) == []
    finally:
        finish.set()
        await runner.cleanup()


async def test_the_same_body_is_sent_again_on_a_307_redirect(tmp_path: Path) -> None:
    upload = tmp_path / "r.bin"
    upload.write_bytes(b"redirected" * 1000)
    seen: list[bytes] = []

    async def redirect(request: web.Request) -> web.StreamResponse:
        seen.append(await request.read())
        raise web.HTTPTemporaryRedirect("/final")

    async def final(request: web.Request) -> web.StreamResponse:
        seen.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/start", redirect)
    app.router.add_post("/final", final)
    runner, url = await serve_on_loopback(app)
    try:
        async with (
            aiohttp.ClientSession() as client,
            client.post(f"{url}/start", data=FileBody(upload)) as response,
        ):
            assert response.status == 200
    finally:
        await runner.cleanup()
    assert seen == [upload.read_bytes()] * 2


def test_only_regular_files_and_positive_chunks(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileBody(tmp_path / "missing")
    with pytest.raises(ValueError, match="is not a regular file"):
        FileBody(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file"):
        FileBody(fifo)
    (tmp_path / "f.json").write_text("{}")
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        FileBody(tmp_path / "f.json", chunk_size=0)
    body = FileBody(tmp_path / "f.json")
    assert (body.size, body.path, body.content_type) == (2, tmp_path / "f.json", "application/json")
    assert FileBody(tmp_path / "f.json", content_type="text/x-custom").content_type == (
        "text/x-custom"
    )
    assert repr(body) == f"<FileBody {str(tmp_path / 'f.json')!r} size=2>"
    assert (body.consumed, body.autoclose) == (False, True)


async def test_never_read_into_memory(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"abc")
    body = FileBody(tmp_path / "f.bin")
    with pytest.raises(TypeError, match="never read into memory"):
        body.decode()
    with pytest.raises(TypeError, match="never read into memory"):
        await body.as_bytes()


async def test_a_fifo_swapped_in_after_creation_fails_without_blocking(
    tmp_path: Path, server: FakeAuthServer
) -> None:
    path = tmp_path / "swap"
    path.write_bytes(b"data")
    body = FileBody(path)
    path.unlink()
    os.mkfifo(path)  # opening a FIFO for reading would block until a writer came
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.ClientConnectionError) as raised:
            async with client.post(f"{server.url}/api/x", data=body):
                pass
    assert "is no longer a regular file" in str(raised.value.__cause__)
