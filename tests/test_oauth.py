from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aioscopedauth import (
    Auth,
    AuthMode,
    OAuthConfig,
    RefreshFailureReason,
    RefreshTokenFailedError,
    TransientRefreshError,
)
from aioscopedauth._oauth import (
    CODEX_CLIENT_ID,
    CODEX_TOKEN_URL,
    classify_refresh_failure,
    extract_error_code,
    is_stale,
    scrub,
)
from aioscopedauth.testing import chatgpt_auth, make_jwt

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CONFIG = OAuthConfig("http://127.0.0.1:1/token", "client")


def _auth(
    access: str, last_refresh: datetime | None = NOW, mode: AuthMode = AuthMode.CHATGPT
) -> Auth:
    data = chatgpt_auth(access_token=access, last_refresh=last_refresh, mode=mode)
    return Auth.from_data(data)


def _jwt(exp: datetime, iat: datetime | None = None) -> str:
    claims: dict[str, object] = {"exp": exp.timestamp()}
    if iat is not None:
        claims["iat"] = iat.timestamp()
    return make_jwt(claims)


@pytest.mark.parametrize(
    ("exp_in", "iat_ago", "stale"),
    [
        (timedelta(minutes=30), timedelta(minutes=30), False),
        (timedelta(minutes=4), timedelta(minutes=56), True),  # inside the 5-minute window
        (timedelta(seconds=-1), timedelta(hours=1), True),  # expired
        # A 2-second token is not refreshed on every call: the window is capped at 0.5 s.
        (timedelta(seconds=1.8), timedelta(seconds=0.2), False),
        (timedelta(seconds=0.4), timedelta(seconds=1.6), True),
    ],
)
def test_stale_by_exp(exp_in: timedelta, iat_ago: timedelta, stale: bool) -> None:
    auth = _auth(_jwt(NOW + exp_in, NOW - iat_ago))
    assert is_stale(auth, NOW, CONFIG) is stale


def test_stale_by_age_without_exp() -> None:
    assert is_stale(_auth("opaque", NOW - timedelta(days=9)), NOW, CONFIG)
    assert not is_stale(_auth("opaque", NOW - timedelta(days=7)), NOW, CONFIG)
    assert not is_stale(_auth("opaque", None), NOW, CONFIG)


def test_only_managed_chatgpt_is_ever_stale() -> None:
    expired = _jwt(NOW - timedelta(hours=1))
    assert not is_stale(_auth(expired, mode=AuthMode.CHATGPT_AUTH_TOKENS), NOW, CONFIG)
    assert not is_stale(Auth(AuthMode.API_KEY, "sk"), NOW, CONFIG)
    assert not is_stale(Auth(AuthMode.BEARER, expired), NOW, CONFIG)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"error": {"code": "Refresh_Token_Reused"}}', "refresh_token_reused"),
        ('{"error": "refresh_token_expired"}', "refresh_token_expired"),
        ('{"code": "x"}', "x"),
        ('{"error": {"message": "m"}, "code": "y"}', "y"),
        ('{"error": {"code": "  "}}', None),
        ("[1]", None),
        ("", None),
        ("<html>", None),
    ],
)
def test_extract_error_code(body: str, code: str | None) -> None:
    assert extract_error_code(body) == code


def test_401_is_always_permanent() -> None:
    error = classify_refresh_failure(401, "nope")
    assert isinstance(error, RefreshTokenFailedError)
    assert error.reason is RefreshFailureReason.OTHER
    assert str(error) == (
        "Your access token could not be refreshed. Please log out and sign in again."
    )


def test_recognised_code_is_permanent_whatever_the_status() -> None:
    error = classify_refresh_failure(400, '{"error": {"code": "refresh_token_invalidated"}}')
    assert isinstance(error, RefreshTokenFailedError)
    assert error.reason is RefreshFailureReason.REVOKED


def test_other_statuses_are_transient_with_status() -> None:
    error = classify_refresh_failure(503, '{"error": {"message": "later"}}')
    assert isinstance(error, TransientRefreshError)
    assert error.status == 503
    assert str(error) == "Failed to refresh token: 503 Service Unavailable: later"
    odd = classify_refresh_failure(599, "")
    assert str(odd) == "Failed to refresh token: 599: Unknown error"


def test_scrub_redacts_and_caps() -> None:
    assert scrub("a SECRET b", ["SECRET"]) == "a [redacted] b"
    assert len(scrub("x" * 1000, [])) == 301


def test_codex_config_honours_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", raising=False)
    config = OAuthConfig.codex()
    assert (config.token_url, config.client_id) == (CODEX_TOKEN_URL, CODEX_CLIENT_ID)
    assert config.account_header == "ChatGPT-Account-ID"
    assert config.refresh_window == timedelta(minutes=5)
    monkeypatch.setenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", "http://127.0.0.1:5/t")
    assert OAuthConfig.codex(timeout=3.0).token_url == "http://127.0.0.1:5/t"
    assert OAuthConfig.codex(timeout=3.0).timeout == 3.0
