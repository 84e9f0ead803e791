from __future__ import annotations

import asyncio
import io
import json
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from aioscopedauth import (
    AuthDotJson,
    AuthManager,
    AuthMiddleware,
    CommandBearerRefresher,
    FileAuthStore,
    OAuthConfig,
    ProviderAuthCommand,
    RecoveryEvent,
    RefreshTokenFailedError,
    TransientRefreshError,
)
from aioscopedauth.testing import (
    FakeAuthServer,
    TokenFailure,
    serve_on_loopback,
    write_auth_json,
    write_token_script,
)

from support import CANARIES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def events() -> list[RecoveryEvent]:
    return []


@pytest.fixture
async def session(
    manager: AuthManager, events: list[RecoveryEvent]
) -> AsyncIterator[aiohttp.ClientSession]:
    middleware = AuthMiddleware(manager, on_event=events.append)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as client:
        yield client


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def test_first_request_carries_the_bearer(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    login = server.login()
    write_auth_json(home, login)
    status, _ = await _get(session, f"{server.url}/api/me")
    assert status == 200
    assert login.tokens is not None
    sent = server.last_api_request
    assert sent is not None
    assert sent["headers"]["Authorization"] == f"Bearer {login.tokens.access_token}"
    assert sent["headers"]["ChatGPT-Account-ID"] == "acct-1"
    assert server.token_calls == 0


async def test_revoked_token_recovers_with_one_post(
    home: Path,
    session: aiohttp.ClientSession,
    server: FakeAuthServer,
    events: list[RecoveryEvent],
) -> None:
    write_auth_json(home, server.login())
    assert (await _get(session, f"{server.url}/api/a"))[0] == 200
    server.revoke_access_tokens()
    status, body = await _get(session, f"{server.url}/api/b?secret=q")
    assert status == 200
    assert json.loads(body)["path"] == "/api/b"
    assert server.token_calls == 1
    assert server.api_hits == 3  # a; b rejected; b retried once (the reload changed nothing)
    assert [(e.mode, e.step, e.outcome, e.auth_state_changed) for e in events] == [
        ("managed", "reload", "unchanged", False),
        ("managed", "refresh_token", "changed", True),
        ("managed", "done", "recovered", None),
    ]
    assert all(e.url == f"{server.url}/api/b" for e in events)
    # One request's trace: which auth each send carried, what each step did, how it ended.
    first, refresh, recovered = events
    assert {e.request for e in events} == {1}
    assert [(e.send, e.next_step, e.reason) for e in events] == [
        (1, "refresh_token", ""),
        (1, "done", ""),
        (2, "done", ""),
    ]
    assert first.rejected == refresh.rejected != refresh.retry_with == recovered.rejected
    assert len(recovered.rejected) == 8
    assert first.retry_with == recovered.retry_with == ""


async def test_1000_concurrent_requests_after_a_revoke(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    assert (await _get(session, f"{server.url}/api/warm"))[0] == 200
    server.revoke_access_tokens()
    hits_before = server.api_hits
    results = await asyncio.gather(*(_get(session, f"{server.url}/api/{i}") for i in range(1000)))
    assert [status for status, _ in results] == [200] * 1000
    assert server.token_calls == 1
    assert server.api_hits - hits_before <= 2000


async def test_requests_still_waiting_for_a_connection_go_out_with_the_new_token(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    # One connection: the other requests of the burst wait for it with their headers set.
    # A rejected token earns a 401 whose body is too large to buffer (8 MiB: aiohttp stops
    # reading it), so the connection stays taken until the recovery is done; then the waiting
    # requests must carry the new token instead of each earning a 401 of its own.
    login = server.login()
    write_auth_json(home, login)
    assert login.tokens is not None
    stale = f"Bearer {login.tokens.access_token}"
    carried: list[str] = []

    async def api(request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "")
        carried.append(bearer)
        if not server.is_valid_access_token(bearer.removeprefix("Bearer ")):
            return web.Response(status=401, body=b"x" * (8 * 1024 * 1024))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/api/{n}", api)
    runner, url = await serve_on_loopback(app)
    middleware = AuthMiddleware(manager)
    try:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as s:
            assert (await _get(s, f"{url}/api/warm"))[0] == 200
            server.revoke_access_tokens()
            carried.clear()
            results = await asyncio.gather(*(_get(s, f"{url}/api/{i}") for i in range(10)))
    finally:
        await runner.cleanup()
    assert [status for status, _ in results] == [200] * 10
    assert server.token_calls == 1
    # The first request's 401 and its retry, then nine requests with the new token at once.
    assert carried.count(stale) == 1
    assert len(carried) == 11
    assert len(set(carried) - {stale}) == 1


async def test_managed_request_is_sent_at_most_four_times(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer, manager: AuthManager
) -> None:
    write_auth_json(home, server.login())
    await manager.auth()
    write_auth_json(home, server.login())  # another process saved newer tokens: reload changes
    server.api_always_401 = True
    status, _ = await _get(session, f"{server.url}/api/x")
    assert status == 401
    # Initial, after the reload, after a refresh, and after a second refresh: one rejected
    # fresh token may be a revocation that landed after it was minted; two are the login.
    assert server.api_hits == 4
    assert server.token_calls == 2


async def test_always_401_hands_the_caller_a_readable_401(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    server.api_always_401 = True
    status, body = await _get(session, f"{server.url}/api/x")
    assert status == 401
    assert json.loads(body)["error"]["code"] == "invalid_token"
    assert server.api_hits == 3  # initial, then two fresh tokens rejected


async def test_bearer_request_is_sent_at_most_three_times(
    tmp_path: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    script = write_token_script(tmp_path / "s", "p1", "p2", "p3")
    derived = manager.with_external_bearer_refresher(
        CommandBearerRefresher(ProviderAuthCommand("./print-token.sh", cwd=script.folder))
    )
    events: list[RecoveryEvent] = []
    async with aiohttp.ClientSession(
        middlewares=(AuthMiddleware(derived, on_event=events.append),)
    ) as client:
        status, _ = await _get(client, f"{server.url}/api/x")
    assert status == 401
    assert server.api_hits == 3
    assert script.runs == 3
    assert [(e.mode, e.step, e.outcome, e.fresh, e.reason) for e in events] == [
        ("external", "external_refresh", "changed", True, ""),
        ("external", "external_refresh", "changed", True, ""),
        ("external", "done", "gave_up", None, "recovery_exhausted"),
    ]
    sent = server.last_api_request
    assert sent is not None
    assert sent["headers"]["Authorization"] == "Bearer p3"
    assert "ChatGPT-Account-ID" not in sent["headers"]


async def test_redirect_to_another_origin_carries_no_authorization(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    async with FakeAuthServer() as other:
        other.api_always_401 = False
        target = f"{other.url}/api/landing"
        async with session.get(f"{server.url}/redirect", params={"to": target}) as response:
            assert response.status == 401  # the other origin got no credentials
        sent = other.last_api_request
        assert sent is not None
        assert "Authorization" not in sent["headers"]
        assert "ChatGPT-Account-ID" not in sent["headers"]
        assert other.api_hits == 1


async def test_same_origin_redirect_carries_authorization(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    login = server.login()
    write_auth_json(home, login)
    async with session.get(f"{server.url}/redirect", params={"to": "/api/landing"}) as response:
        assert response.status == 200
    sent = server.last_api_request
    assert sent is not None
    assert login.tokens is not None
    assert sent["headers"]["Authorization"] == f"Bearer {login.tokens.access_token}"


async def test_explicit_origins_scope(
    home: Path, manager: AuthManager, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    async with FakeAuthServer() as other:
        middleware = AuthMiddleware(manager, origins=[other.url])
        async with aiohttp.ClientSession(middlewares=(middleware,)) as client:
            await _get(client, f"{server.url}/api/x")
            first = server.last_api_request
            assert first is not None
            assert "Authorization" not in first["headers"]
            await _get(client, f"{other.url}/api/y")
            second = other.last_api_request
            assert second is not None
            assert "Authorization" in second["headers"]
    with pytest.raises(ValueError, match="origins must be absolute URLs"):
        AuthMiddleware(manager, origins=["/relative"])


async def test_caller_authorization_is_left_alone(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    async with session.get(
        f"{server.url}/api/x", headers={"Authorization": "Bearer caller-own"}
    ) as response:
        assert response.status == 401
    sent = server.last_api_request
    assert sent is not None
    assert sent["headers"]["Authorization"] == "Bearer caller-own"
    assert server.token_calls == 0


async def test_logged_out_sends_without_auth(
    session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    status, _ = await _get(session, f"{server.url}/api/x")
    assert status == 401
    sent = server.last_api_request
    assert sent is not None
    assert "Authorization" not in sent["headers"]


async def test_api_key_401_is_not_recovered(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    write_auth_json(home, AuthDotJson.for_api_key("sk-wrong"))
    status, _ = await _get(session, f"{server.url}/api/x")
    assert status == 401
    assert server.api_hits == 1
    assert server.token_calls == 0


async def _post_json_after_revoke(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer, **kwargs: object
) -> dict[str, object]:
    write_auth_json(home, server.login())
    await _get(session, f"{server.url}/api/warm")
    server.revoke_access_tokens()
    async with session.post(f"{server.url}/api/submit", **kwargs) as response:  # type: ignore[arg-type]
        assert response.status == 200
    assert server.token_calls == 1
    sent = server.last_api_request
    assert sent is not None
    return sent


async def test_post_json_body_arrives_intact_on_retry(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    payload = {"prompt": "héllo", "n": [1, 2, 3]}
    sent = await _post_json_after_revoke(home, session, server, json=payload)
    assert json.loads(sent["body"]) == payload  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": b"raw-bytes"}, b"raw-bytes"),
        ({"data": "some text"}, b"some text"),
        ({"data": {"a": "1", "b": "two"}}, b"a=1&b=two"),
        ({"data": io.BytesIO(b"file-like")}, b"file-like"),
    ],
)
async def test_replayable_bodies_are_resent(
    home: Path,
    session: aiohttp.ClientSession,
    server: FakeAuthServer,
    kwargs: dict[str, object],
    expected: bytes,
) -> None:
    sent = await _post_json_after_revoke(home, session, server, **kwargs)
    assert sent["body"] == expected


async def test_file_upload_is_resent(
    home: Path, tmp_path: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"file-on-disk" * 100)
    with upload.open("rb") as handle:
        sent = await _post_json_after_revoke(home, session, server, data=handle)
    assert sent["body"] == b"file-on-disk" * 100


async def test_stream_body_is_not_retried(
    home: Path,
    session: aiohttp.ClientSession,
    server: FakeAuthServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_auth_json(home, server.login())
    await _get(session, f"{server.url}/api/warm")
    server.revoke_access_tokens()

    async def stream() -> AsyncIterator[bytes]:
        yield b"chunk-1"
        yield b"chunk-2"

    async with session.post(f"{server.url}/api/upload?k=secret", data=stream()) as response:
        assert response.status == 401
    assert server.api_hits == 2
    assert "cannot be sent twice" in caplog.text
    assert "k=secret" not in caplog.text


async def test_permanent_refresh_failure_raises(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    await _get(session, f"{server.url}/api/warm")
    server.revoke_access_tokens()
    server.revoke_refresh_tokens()
    with pytest.raises(RefreshTokenFailedError, match="refresh token was revoked"):
        await _get(session, f"{server.url}/api/x")


async def test_transient_refresh_failure_raises(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    await _get(session, f"{server.url}/api/warm")
    server.revoke_access_tokens()
    server.failures.append(TokenFailure(503, "maintenance"))
    with pytest.raises(TransientRefreshError, match="503 Service Unavailable: maintenance"):
        await _get(session, f"{server.url}/api/x")
    # The next request recovers.
    assert (await _get(session, f"{server.url}/api/y"))[0] == 200


async def test_token_endpoint_on_same_origin_answering_401_is_a_clear_error(
    home: Path, oauth: OAuthConfig, server: FakeAuthServer
) -> None:
    # The manager refreshes through the very session that carries its middleware, and the
    # token endpoint shares the API's origin: the token request must not pass through the
    # middleware (no re-entry, no deadlock), and its 401 is a clear error.
    write_auth_json(home, server.login())
    holder: dict[str, AuthMiddleware] = {}

    async def late(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        return await holder["middleware"](request, handler)

    async with (
        aiohttp.ClientSession(middlewares=(late,)) as client,
        AuthManager(FileAuthStore(home), oauth, http=client) as manager,
    ):
        holder["middleware"] = AuthMiddleware(manager)
        assert (await _get(client, f"{server.url}/api/warm"))[0] == 200
        server.revoke_access_tokens()
        server.failures.append(TokenFailure(401, {"error": {"code": "unknown"}}))
        async with asyncio.timeout(10):
            with pytest.raises(RefreshTokenFailedError, match="could not be refreshed"):
                await _get(client, f"{server.url}/api/x")
    assert server.token_calls == 1
    assert "Authorization" not in server.token_request_headers[0]


async def test_websocket_handshake_recovers(
    home: Path, session: aiohttp.ClientSession, server: FakeAuthServer
) -> None:
    write_auth_json(home, server.login())
    await _get(session, f"{server.url}/api/warm")
    server.revoke_access_tokens()
    async with session.ws_connect(f"{server.url}/ws") as socket:
        await socket.send_str("hi")
        message = await socket.receive()
        assert message.data == "echo:hi"
    assert server.token_calls == 1


async def test_no_secret_in_events_or_logs(
    home: Path,
    session: aiohttp.ClientSession,
    server: FakeAuthServer,
    events: list[RecoveryEvent],
    canary_logs: pytest.LogCaptureFixture,
) -> None:
    login = server.login()
    assert login.tokens is not None
    write_auth_json(home, login)
    await _get(session, f"{server.url}/api/warm")
    server.revoke_access_tokens()
    await _get(session, f"{server.url}/api/x")
    secrets = [login.tokens.access_token, login.tokens.refresh_token, *CANARIES]
    text = "\n".join(r.getMessage() for r in canary_logs.records) + repr(events)
    for secret in secrets:
        assert secret not in text
    assert "401 recovery: mode=managed step=refresh_token outcome=changed" in text


def test_scope_is_compared_by_scheme_host_and_port(manager: AuthManager) -> None:
    middleware = AuthMiddleware(manager, origins=["https://api.example", "http://b.example:8080"])
    assert middleware.in_scope(URL("https://api.example/v1?x=1"))
    assert middleware.in_scope(URL("https://api.example:443/v1"))
    assert not middleware.in_scope(URL("http://api.example/v1"))
    assert not middleware.in_scope(URL("https://api.example:8443/v1"))
    assert not middleware.in_scope(URL("https://evil.example/v1"))
    assert middleware.in_scope(URL("http://b.example:8080/"))
    assert repr(middleware).startswith(
        "<AuthMiddleware scope=['http://b.example:8080', 'https://api.example:443'] manager="
    )
    pinned = AuthMiddleware(manager)
    assert pinned.in_scope(URL("https://first.example/a"))
    assert pinned.in_scope(URL("https://first.example/b"))
    assert not pinned.in_scope(URL("https://second.example/a"))


async def test_no_login_is_said_once(
    session: aiohttp.ClientSession, server: FakeAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="aioscopedauth.middleware")
    for _ in range(3):
        assert (await _get(session, f"{server.url}/api/hello"))[0] == 401
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    expected = (
        f"No login: sending GET {server.url}/api/hello without credentials (log in first, e.g. "
        "`aioscopedauth login --api-key` or `codex login`)"
    )
    assert [r.getMessage() for r in warnings] == [expected]
