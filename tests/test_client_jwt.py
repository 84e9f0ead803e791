"""``PrivateKeyJWT``: the key never shows, bad input is refused clearly, assertions are right.

The assertions are checked by verifying them with the public key (joserfc), not by reading
our own code back; the real provider checks them in tests/oidc/test_private_key_jwt.py.
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwk, jwt

from aioscopedauth import ConfigError, OAuthConfig, PrivateKeyJWT
from aioscopedauth._client_jwt import ASSERTION_TYPE
from aioscopedauth._rfc6749 import client_authentication

if TYPE_CHECKING:
    from pathlib import Path

TOKEN_URL = "https://issuer.example/oauth/token"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: Any, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _verify(token: str, key: PrivateKeyJWT) -> tuple[dict[str, Any], dict[str, Any]]:
    public = jwk.import_key(key.public_jwk())
    decoded = jwt.decode(token, public, algorithms=[key.algorithm])
    return dict(decoded.header), dict(decoded.claims)


@pytest.mark.parametrize(
    ("algorithm", "make"),
    [
        ("RS256", lambda: RSA_KEY),
        ("PS384", lambda: RSA_KEY),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("ES384", lambda: ec.generate_private_key(ec.SECP384R1())),
        ("Ed25519", ed25519.Ed25519PrivateKey.generate),
    ],
)
def test_assertion_claims_from_a_pem_file(
    tmp_path: Path,
    algorithm: str,
    make: Any,
) -> None:
    key = PrivateKeyJWT(_pem(make(), tmp_path / "k.pem"), algorithm=algorithm, key_id="k-1")
    header, claims = _verify(key.assertion("client 1", TOKEN_URL, now=1_700_000_000.7), key)
    assert header == {"alg": algorithm, "typ": "JWT", "kid": "k-1"}
    assert set(claims) == {"iss", "sub", "aud", "jti", "iat", "exp"}
    assert claims["iss"] == claims["sub"] == "client 1"
    assert claims["aud"] == TOKEN_URL
    assert claims["iat"] == 1_700_000_000
    assert claims["exp"] == 1_700_000_060  # the default lifetime: 60 s
    assert len(claims["jti"]) >= 32  # 24 random bytes, base64url


def test_every_assertion_has_a_fresh_jti_and_the_configured_lifetime() -> None:
    key = PrivateKeyJWT(RSA_KEY, lifetime=timedelta(minutes=5))
    jtis = set()
    for _ in range(20):
        _, claims = _verify(key.assertion("c", TOKEN_URL, now=1000.0), key)
        assert claims["exp"] - claims["iat"] == 300
        jtis.add(claims["jti"])
    assert len(jtis) == 20


def test_client_authentication_sends_an_assertion_per_request() -> None:
    config = OAuthConfig(TOKEN_URL, "c", dialect="rfc6749", client_key=PrivateKeyJWT(RSA_KEY))
    assert config.client_auth == "private_key_jwt"
    headers, first = client_authentication(config)
    _, second = client_authentication(config)
    assert headers == {}
    assert set(first) == {"client_id", "client_assertion_type", "client_assertion"}
    assert first["client_id"] == "c"
    assert first["client_assertion_type"] == ASSERTION_TYPE
    assert first["client_assertion"] != second["client_assertion"]
    _, claims = _verify(first["client_assertion"], config.client_key)  # type: ignore[arg-type]
    assert claims["aud"] == TOKEN_URL


@pytest.mark.parametrize(
    ("audience", "issuer", "expected"),
    [
        ("token_endpoint", None, TOKEN_URL),
        ("issuer", "https://issuer.example", "https://issuer.example"),
        ("https://aud.example/x", None, "https://aud.example/x"),
    ],
)
def test_audience(audience: str, issuer: str | None, expected: str) -> None:
    key = PrivateKeyJWT(RSA_KEY, audience=audience)
    config = OAuthConfig(TOKEN_URL, "c", dialect="rfc6749", client_key=key, issuer=issuer)
    _, fields = client_authentication(config)
    _, claims = _verify(fields["client_assertion"], key)
    assert claims["aud"] == expected


def test_the_key_never_shows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = _pem(RSA_KEY, tmp_path / "k.pem")
    pem = path.read_text()
    body = "".join(pem.splitlines()[1:-1])
    key = PrivateKeyJWT(path, key_id="k-1")
    config = OAuthConfig(TOKEN_URL, "c", dialect="rfc6749", client_key=key)
    shown = f"{key!r} {key!s} {config!r} {config!s} {caplog.text}"
    assert repr(key) == (
        "PrivateKeyJWT(algorithm='RS256', key_id='k-1', lifetime=datetime.timedelta(seconds=60), "
        "audience='token_endpoint')"
    )
    assert body[:40] not in shown
    assert "private" not in key.public_jwk()
    assert set(key.public_jwk()) == {"kty", "n", "e", "alg", "use", "kid"}


@pytest.mark.parametrize(
    ("make", "fields", "message"),
    [
        (
            lambda p: p / "missing.pem",
            {},
            (
                "PrivateKeyJWT: cannot read the private key file {p}/missing.pem (No such file or "
                "directory): check the path and its permissions"
            ),
        ),
        (
            lambda p: _write(p / "garbage.pem", b"-----BEGIN PRIVATE KEY-----\nCANARY-77\n"),
            {},
            (
                "PrivateKeyJWT: {p}/garbage.pem holds no RSA private key in PEM form usable with "
                "RS256: check the file, or the algorithm"
            ),
        ),
        (
            lambda p: _pem(ec.generate_private_key(ec.SECP256R1()), p / "ec.pem"),
            {},
            (
                "PrivateKeyJWT: {p}/ec.pem holds no RSA private key in PEM form usable with RS256: "
                "check the file, or the algorithm"
            ),
        ),
        (
            lambda _: ec.generate_private_key(ec.SECP384R1()),
            {"algorithm": "ES256"},
            "PrivateKeyJWT: the key cannot sign with ES256: check the algorithm",
        ),
        (
            lambda _: RSA_KEY.public_key(),
            {},
            "PrivateKeyJWT: RS256 needs a RSA private key",
        ),
        (
            lambda _: b"CANARY-not-a-key-77",
            {},
            (
                "PrivateKeyJWT: key must be the path of a PEM file or a RSA private key object "
                "(cryptography or joserfc) usable with RS256"
            ),
        ),
        (
            lambda _: RSA_KEY,
            {"algorithm": "HS256"},
            (
                "PrivateKeyJWT: algorithm must be one of RS256, RS384, RS512, PS256, PS384, PS512, "
                "ES256, ES384, ES512, Ed25519"
            ),
        ),
        (
            lambda _: RSA_KEY,
            {"lifetime": timedelta(hours=2)},
            (
                "PrivateKeyJWT: lifetime must be a timedelta from 1 second to 1 hour (the default, "
                "60 s, suits most providers; some accept at most 5 minutes)"
            ),
        ),
        (
            lambda _: RSA_KEY,
            {"audience": "the issuer"},
            "PrivateKeyJWT: audience must be 'token_endpoint', 'issuer' or an absolute URL",
        ),
        (
            lambda _: RSA_KEY,
            {"key_id": ""},
            "PrivateKeyJWT: key_id must be a non-empty printable string, or None",
        ),
    ],
)
def test_bad_keys_are_refused_without_quoting_them(
    tmp_path: Path,
    make: Any,
    fields: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        PrivateKeyJWT(make(tmp_path), **fields)
    assert str(caught.value) == message.format(p=tmp_path)
    assert caught.value.__cause__ is None
    assert "CANARY" not in str(caught.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"client_auth": "client_secret_basic", "client_secret": "s"},
            (
                "OAuthConfig: client_key is set but client_auth is 'client_secret_basic': use "
                "client_auth 'private_key_jwt', or drop the key"
            ),
        ),
        (
            {"client_auth": "private_key_jwt", "client_secret": "s"},
            (
                "OAuthConfig: client_auth 'private_key_jwt' sends no secret, yet client_secret is "
                "set: drop the secret"
            ),
        ),
        (
            {"client_key": PrivateKeyJWT(RSA_KEY, audience="issuer")},
            (
                "OAuthConfig: client_key's audience is 'issuer' but issuer is not set: pass "
                "issuer=... (or use OAuthConfig.discover)"
            ),
        ),
        (
            {"client_key": "key.pem"},
            "OAuthConfig: client_key must be a PrivateKeyJWT (the private key of private_key_jwt)",
        ),
    ],
)
def test_configuration_problems(fields: dict[str, Any], message: str) -> None:
    fields.setdefault("client_key", PrivateKeyJWT(RSA_KEY))
    with pytest.raises(ConfigError) as caught:
        OAuthConfig(TOKEN_URL, "c", dialect="rfc6749", **fields)
    assert str(caught.value) == message


def test_without_the_extra_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Uninstalling joserfc from the shared environment is not an option: a None entry in
    # sys.modules is how Python itself marks a module as not importable.
    monkeypatch.setitem(sys.modules, "joserfc", None)
    with pytest.raises(ConfigError) as caught:
        PrivateKeyJWT(RSA_KEY)
    assert str(caught.value) == (
        "client_auth 'private_key_jwt' needs the jwt extra (joserfc): install "
        "aioscopedauth[jwt], or use client_secret_basic"
    )
    assert caught.value.__cause__ is None
