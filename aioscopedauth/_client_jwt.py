"""``private_key_jwt`` client authentication (RFC 7523 §2.2, OpenID Connect Core §9).

The client proves who it is with a short-lived JWT it signs with its private key; the provider
holds the public key (registered, or at the client's ``jwks_uri``). Signing is done by
``joserfc`` (the ``jwt`` extra), never here: this module only decides the claims. The key is
loaded once, when the configuration is built, and never appears in a ``repr``, a log or an
error.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import attrs

from ._errors import ConfigError

if TYPE_CHECKING:
    from joserfc.jwk import ECKey, OKPKey, RSAKey

__all__ = ["ALGORITHMS", "ASSERTION_TYPE", "MAX_LIFETIME", "PrivateKeyJWT"]

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""``client_assertion_type`` of a JWT client assertion (RFC 7523 §2.2)."""

ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "Ed25519",
)
"""The asymmetric JWS algorithms an assertion may be signed with (RFC 7518 §3.1, RFC 9864)."""

_KEY_TYPES: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
MAX_LIFETIME: Final = timedelta(hours=1)
"""Longest assertion lifetime accepted: an assertion is a credential while it lives."""
AUDIENCES: Final = ("token_endpoint", "issuer")
EXTRA_HINT: Final = (
    "client_auth 'private_key_jwt' needs the jwt extra (joserfc): install "
    "aioscopedauth[jwt], or use client_secret_basic"
)


def _joserfc() -> Any:  # noqa: ANN401 -- the module, imported only when it is used
    try:
        from joserfc import jwk, jwt
    except ImportError:
        raise ConfigError(EXTRA_HINT) from None
    return jwk, jwt


def _load_key(value: object, algorithm: str) -> RSAKey | ECKey | OKPKey:
    jwk, _ = _joserfc()
    key_type = _KEY_TYPES[algorithm[:2]]
    classes = {"RSA": jwk.RSAKey, "EC": jwk.ECKey, "OKP": jwk.OKPKey}
    key_class = classes[key_type]
    if isinstance(value, jwk.RSAKey | jwk.ECKey | jwk.OKPKey):
        key = value
    elif isinstance(value, str | os.PathLike):
        path = Path(value).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            msg = (
                f"PrivateKeyJWT: cannot read the private key file {path} ({exc.strerror}): "
                "check the path and its permissions"
            )
            raise ConfigError(msg) from None
        try:
            key = key_class.import_key(data)
        except Exception:  # noqa: BLE001 -- any parse failure; the cause could quote the key
            msg = (
                f"PrivateKeyJWT: {path} holds no {key_type} private key in PEM form usable with "
                f"{algorithm}: check the file, or the algorithm"
            )
            raise ConfigError(msg) from None
    else:
        try:
            # A cryptography private key object (rsa, ec or ed25519).
            key = key_class.import_key(value)
        except Exception:  # noqa: BLE001 -- any import failure; the cause could quote the key
            msg = (
                f"PrivateKeyJWT: key must be the path of a PEM file or a {key_type} private key "
                f"object (cryptography or joserfc) usable with {algorithm}"
            )
            raise ConfigError(msg) from None
    if key.key_type != key_type or not key.is_private:
        msg = f"PrivateKeyJWT: {algorithm} needs a {key_type} private key"
        raise ConfigError(msg)
    return key  # type: ignore[no-any-return]  # joserfc's import_key is typed loosely


def _check_lifetime(_instance: object, _attribute: object, value: object) -> None:
    if (
        not isinstance(value, timedelta)
        or not math.isfinite(value.total_seconds())
        or not timedelta(seconds=1) <= value <= MAX_LIFETIME
    ):
        msg = (
            "PrivateKeyJWT: lifetime must be a timedelta from 1 second to 1 hour (the default, "
            "60 s, suits most providers; some accept at most 5 minutes)"
        )
        raise ConfigError(msg)


def _check_algorithm(_instance: object, _attribute: object, value: object) -> None:
    if value not in ALGORITHMS:
        msg = f"PrivateKeyJWT: algorithm must be one of {', '.join(ALGORITHMS)}"
        raise ConfigError(msg)


def _check_key_id(_instance: object, _attribute: object, value: str | None) -> None:
    checked: object = value  # a caller may pass anything
    if checked is not None and (
        not isinstance(checked, str) or not checked.isprintable() or not checked
    ):
        msg = "PrivateKeyJWT: key_id must be a non-empty printable string, or None"
        raise ConfigError(msg)


def _check_audience(_instance: object, _attribute: object, value: object) -> None:
    if value in AUDIENCES:
        return
    if isinstance(value, str) and urlsplit(value).scheme in {"http", "https"}:
        return
    msg = "PrivateKeyJWT: audience must be 'token_endpoint', 'issuer' or an absolute URL"
    raise ConfigError(msg)


@attrs.frozen
class PrivateKeyJWT:
    """The private key a client signs its ``private_key_jwt`` assertions with.

    Pass it as ``OAuthConfig(client_key=...)`` (``client_auth`` then defaults to
    ``"private_key_jwt"``). Each token request carries a new assertion: ``iss`` and ``sub``
    the client id, ``aud`` the audience, a fresh random ``jti`` (providers refuse one seen
    before), ``iat`` now and ``exp`` ``lifetime`` later. Needs the ``jwt`` extra.

    Args:
        key: The path of a PEM file holding the private key (read once, here), or a private
            key object (``cryptography``'s RSA, EC or Ed25519 key, or a ``joserfc`` key).
            Never shown in a ``repr``, a log or an error.
        algorithm: The JWS algorithm (one of ``ALGORITHMS``): ``RS256`` by default; the
            key's type must fit it (RSA for ``RS*``/``PS*``, EC for ``ES*``, OKP for
            ``Ed25519``).
        key_id: The ``kid`` header, naming the key among those the provider holds.
        lifetime: How long each assertion is valid (default 60 s; from 1 s to 1 hour: some
            providers refuse more than 5 minutes).
        audience: ``"token_endpoint"`` (OpenID Connect Core §9, the default),
            ``"issuer"`` (the issuer identifier, as RFC 7523bis recommends; needs
            ``OAuthConfig.issuer``) or an explicit URL.

    Raises:
        ConfigError: The extra is not installed, the file cannot be read or holds no fitting
            private key, or a value is out of range. The message never quotes the key.
    """

    key: object = attrs.field(repr=False, eq=False)
    algorithm: str = attrs.field(default="RS256", kw_only=True, validator=_check_algorithm)
    key_id: str | None = attrs.field(default=None, kw_only=True, validator=_check_key_id)
    lifetime: timedelta = attrs.field(
        default=timedelta(seconds=60), kw_only=True, validator=_check_lifetime
    )
    audience: str = attrs.field(default="token_endpoint", kw_only=True, validator=_check_audience)
    _jwk: RSAKey | ECKey | OKPKey = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        """Load the key, and sign one assertion to prove it fits the algorithm.

        Raises:
            ConfigError: See the class.
        """
        object.__setattr__(self, "_jwk", _load_key(self.key, self.algorithm))
        try:
            self.assertion("check", "https://check.invalid/token")
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 -- joserfc's refusal; the cause could quote the key
            msg = f"PrivateKeyJWT: the key cannot sign with {self.algorithm}: check the algorithm"
            raise ConfigError(msg) from None

    def claims(self, client_id: str, audience: str, now: float) -> dict[str, Any]:
        """The assertion's claims (a pure function of its arguments and a fresh ``jti``).

        Args:
            client_id: The client id (``iss`` and ``sub``).
            audience: The ``aud``.
            now: The current time, seconds since the epoch.

        Returns:
            The claims.
        """
        issued = int(now)
        return {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": secrets.token_urlsafe(24),
            "iat": issued,
            "exp": issued + int(self.lifetime.total_seconds()),
        }

    def assertion(self, client_id: str, audience: str, now: float | None = None) -> str:
        """Sign a new assertion.

        Args:
            client_id: The client id.
            audience: The ``aud`` (the token endpoint, the issuer, or the configured URL).
            now: The time to sign at (default: now).

        Returns:
            The compact JWS.
        """
        _, jwt = _joserfc()
        header: dict[str, Any] = {"alg": self.algorithm, "typ": "JWT"}
        if self.key_id is not None:
            header["kid"] = self.key_id
        claims = self.claims(client_id, audience, time.time() if now is None else now)
        return str(jwt.encode(header, claims, self._jwk, algorithms=[self.algorithm]))

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK (to register at the provider), with ``kid``, ``alg``, ``use``.

        Returns:
            The JWK as a dict (no private member).
        """
        jwk: dict[str, Any] = dict(self._jwk.as_dict(private=False))
        jwk.update({"alg": self.algorithm, "use": "sig"})
        if self.key_id is not None:
            jwk["kid"] = self.key_id
        return jwk
