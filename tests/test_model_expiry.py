"""``tokens.expires_at``: a standard provider's opaque access token is refreshed before it dies.

Codex writes no ``expires_at``; a payload that has one is still written back byte for byte.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Literal

import attrs
import pytest

from aioscopedauth import Auth, AuthDotJson, OAuthConfig
from aioscopedauth._oauth import min_refresh_gap, stale_at
from aioscopedauth.testing import chatgpt_auth

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CONFIG = OAuthConfig("http://127.0.0.1:9/token", "c")


def _opaque(extra: dict[str, object] | None = None) -> AuthDotJson:
    data = chatgpt_auth(access_token="opaque-access", last_refresh=NOW)
    assert data.tokens is not None
    if extra is not None:
        data = attrs.evolve(data, tokens=attrs.evolve(data.tokens, extra=extra))
    return data


def test_an_opaque_token_without_expiry_waits_for_max_age() -> None:
    # Today's rule for an opaque token, and why expires_at is needed: 8 days, not 60 s.
    assert stale_at(Auth.from_data(_opaque()), CONFIG) == NOW + CONFIG.max_age


def test_an_opaque_token_with_expiry_is_due_before_it() -> None:
    data = _opaque({"expires_at": "2026-06-01T12:01:00Z"})
    assert data.tokens is not None
    assert data.tokens.expires_at == NOW + timedelta(seconds=60)
    auth = Auth.from_data(data)
    # The 5-minute window is capped at a quarter of the 60-second lifetime.
    assert stale_at(auth, CONFIG) == NOW + timedelta(seconds=45)
    assert min_refresh_gap(auth) == 15.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (NOW.timestamp() + 60, NOW + timedelta(seconds=60)),  # seconds since the epoch
        ("not a date", None),
        (True, None),
        (1e300, None),
        (None, None),
    ],
)
def test_expires_at_forms(value: object, expected: datetime | None) -> None:
    data = _opaque({"expires_at": value})
    assert data.tokens is not None
    assert data.tokens.expires_at == expected


def test_a_payload_with_expires_at_round_trips_byte_for_byte() -> None:
    # In the place this library writes it: after Codex's own fields, like any field Codex
    # does not know.
    text = json.dumps(
        {
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": None,
            "tokens": {
                "id_token": _opaque().to_dict()["tokens"]["id_token"],
                "access_token": "opaque-access",
                "refresh_token": "r",
                "account_id": None,
                "expires_at": "2026-06-01T12:01:00.5Z",
                "later": 1,
            },
            "last_refresh": "2026-06-01T12:00:00.123456789Z",
        },
        indent=2,
    )
    assert AuthDotJson.from_json(text).to_json() == text


def test_a_refresh_sets_keeps_or_drops_the_expiry() -> None:
    data = _opaque({"expires_at": "2026-06-01T12:01:00Z", "later": 1})
    later = NOW + timedelta(minutes=1)

    def merged(expires_at: datetime | Literal["keep"] | None = "keep") -> dict[str, object]:
        out = data.with_refreshed_tokens(
            id_token=None, access_token="a2", refresh_token="r2", now=later, expires_at=expires_at
        )
        tokens: dict[str, object] = out.to_dict()["tokens"]
        return tokens

    # Codex's refresh passes nothing: kept.
    assert merged()["expires_at"] == "2026-06-01T12:01:00Z"
    # A new lifetime replaces it where it was.
    new = merged(expires_at=later + timedelta(seconds=60))
    assert new["expires_at"] == "2026-06-01T12:02:00Z"
    assert list(new)[-2:] == ["expires_at", "later"]
    # An answer without one: the old token's expiry is not the new one's.
    assert "expires_at" not in merged(expires_at=None)
    # A login that never had one gets it last.
    plain = _opaque().with_refreshed_tokens(
        id_token=None, access_token="a2", refresh_token="r2", now=later, expires_at=later
    )
    assert list(plain.to_dict()["tokens"])[-1] == "expires_at"
