"""The command line's OAuth providers: ``[oauth_providers.<name>]`` in ``aioscopedauth.toml``.

The library's own file (``$CODEX_HOME/aioscopedauth.toml``, or ``--oauth-config FILE``), not
Codex's ``config.toml``: Codex refuses tables it does not know under ``--strict-config``, so
nothing of ours may go there. A table says where the provider is (an ``issuer`` to discover, or
its endpoints) and who the client is; never a secret: ``client_secret_env`` names the
environment variable that holds it, ``client_secret_keyring = true`` reads it from the system
keyring (service :data:`KEYRING_SERVICE`, user the provider's name). A ``client_secret`` key is
refused. Each provider's login is kept in a folder of its own, ``$CODEX_HOME/providers/<name>``,
so Codex's ``auth.json`` is never touched.

Reading is synchronous (``tomllib``), like ``_config``: a small local file read once at start.
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from ._oauth import OAuthConfig

__all__ = [
    "CONFIG_NAME",
    "KEYRING_SERVICE",
    "OAuthProvider",
    "load_oauth_providers",
    "oauth_config",
    "parse_oauth_providers",
    "provider_home",
]

CONFIG_NAME = "aioscopedauth.toml"
"""The library's own config file, in the Codex home."""
KEYRING_SERVICE = "aioscopedauth-oauth-client"
"""The keyring service under which ``client_secret_keyring`` secrets are kept (user: the name)."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_URL_KEYS = (
    "issuer",
    "token_url",
    "authorization_url",
    "device_authorization_url",
    "revocation_url",
    "api_base_url",
)
_KEYS = {
    *_URL_KEYS,
    "client_id",
    "client_auth",
    "scopes",
    "client_secret_env",
    "client_secret_keyring",
    "redirect_port",
}
_SECRET_KEYS = {"client_secret", "secret", "password", "refresh_token", "access_token"}
_MAX_PORT = 65535


@attrs.frozen
class OAuthProvider:
    """One ``[oauth_providers.<name>]`` table (no secret: only where to find it).

    Attributes:
        name: The table's key (``--provider NAME``).
        client_id: The OAuth client id.
        issuer: The issuer to discover the endpoints from, if set.
        token_url: The token endpoint (needed without ``issuer``).
        authorization_url: The authorization endpoint (browser logins).
        device_authorization_url: The device authorization endpoint (device logins).
        revocation_url: The revocation endpoint (``logout`` revokes there).
        api_base_url: Where ``request`` may send the login (its origin).
        client_auth: ``client_secret_basic``, ``client_secret_post`` or ``none``; ``None``
            chooses by whether there is a secret (and what discovery lists).
        scopes: The scopes a login asks for.
        client_secret_env: The environment variable that holds the client secret.
        client_secret_keyring: Whether the client secret is in the system keyring.
        redirect_port: The loopback port of a browser login (0: any free one).
    """

    name: str
    client_id: str
    issuer: str | None = None
    token_url: str | None = None
    authorization_url: str | None = None
    device_authorization_url: str | None = None
    revocation_url: str | None = None
    api_base_url: str | None = None
    client_auth: str | None = None
    scopes: tuple[str, ...] = ()
    client_secret_env: str | None = None
    client_secret_keyring: bool = False
    redirect_port: int = 0

    @property
    def secret_source(self) -> str | None:
        """Where the client secret comes from, in words (never the secret), or ``None``."""
        if self.client_secret_env is not None:
            return f"${self.client_secret_env}"
        if self.client_secret_keyring:
            return f"the system keyring ({KEYRING_SERVICE}, {self.name})"
        return None


def _fail(name: str, problem: str) -> ConfigError:
    return ConfigError(f"oauth_providers.{name}: {problem}")


def _str(table: Mapping[str, Any], key: str, name: str) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise _fail(name, f"{key} must be a non-empty string")
    return value


def _parse_scopes(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(item, str) and item for item in value):
        return tuple(value)
    raise _fail(name, "scopes must be a list of strings (or one space-separated string)")


def _parse_one(name: str, table: object) -> OAuthProvider:
    if not _NAME.fullmatch(name):
        msg = (
            f"oauth_providers: {name!r} is not a usable name (letters, digits, '_', '.', '-'; "
            "at most 64)"
        )
        raise ConfigError(msg)
    if not isinstance(table, dict):
        raise _fail(name, "must be a table")
    secrets_here = sorted(_SECRET_KEYS & set(table))
    if secrets_here:
        # Said before anything else, and without the value: the file is no place for it.
        raise _fail(
            name,
            f"{secrets_here[0]} is refused: a secret is never read from this file; name the "
            'environment variable that holds it with client_secret_env = "VAR", or keep it '
            "in the system keyring with client_secret_keyring = true",
        )
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise _fail(name, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    client_id = _str(table, "client_id", name)
    if client_id is None:
        raise _fail(name, "client_id is required")
    urls = {key: _str(table, key, name) for key in _URL_KEYS}
    if urls["issuer"] is None and urls["token_url"] is None:
        raise _fail(name, "give issuer (its endpoints are discovered) or token_url")
    env = _str(table, "client_secret_env", name)
    from_keyring = table.get("client_secret_keyring", False)
    if not isinstance(from_keyring, bool):
        raise _fail(name, "client_secret_keyring must be true or false")
    if env is not None and from_keyring:
        raise _fail(name, "give client_secret_env or client_secret_keyring, not both")
    port = table.get("redirect_port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _MAX_PORT:
        raise _fail(name, "redirect_port must be a port number (0: any free port)")
    return OAuthProvider(
        name=name,
        client_id=client_id,
        client_auth=_str(table, "client_auth", name),
        scopes=_parse_scopes(table.get("scopes"), name),
        client_secret_env=env,
        client_secret_keyring=from_keyring,
        redirect_port=port,
        **urls,
    )


def parse_oauth_providers(doc: Mapping[str, Any]) -> dict[str, OAuthProvider]:
    """Read the ``oauth_providers`` tables of a parsed ``aioscopedauth.toml``.

    Args:
        doc: The parsed document.

    Returns:
        The providers by name.

    Raises:
        ConfigError: A table is not usable (a secret in it, an unknown key, no ``client_id``,
            neither ``issuer`` nor ``token_url``…); the message names the table and the key.
    """
    tables = doc.get("oauth_providers", {})
    if not isinstance(tables, dict):
        msg = "oauth_providers must be a table of [oauth_providers.NAME] tables"
        raise ConfigError(msg)
    return {name: _parse_one(name, table) for name, table in tables.items()}


def load_oauth_providers(path: Path) -> dict[str, OAuthProvider]:
    """Read ``path`` (an ``aioscopedauth.toml``); a missing file has no providers.

    Raises:
        ConfigError: The file cannot be read or parsed, or a table is not usable.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        msg = f"{path} is not valid TOML: {exc}"
        raise ConfigError(msg) from None
    try:
        return parse_oauth_providers(doc)
    except ConfigError as exc:
        msg = f"{path}: {exc}"
        raise ConfigError(msg) from None


def provider_home(codex_home: Path, name: str) -> Path:
    """The folder that keeps provider ``name``'s login: ``<codex home>/providers/<name>``."""
    return codex_home / "providers" / name


def _keyring_secret(name: str) -> str:
    try:
        import keyring  # noqa: PLC0415 -- an optional extra, imported on use
        import keyring.errors  # noqa: PLC0415 -- idem
    except ImportError:
        msg = (
            f"oauth_providers.{name}: client_secret_keyring needs the keyring package "
            "(pip install 'aioscopedauth[keyring]')"
        )
        raise ConfigError(msg) from None
    try:
        return keyring.get_password(KEYRING_SERVICE, name) or ""
    except keyring.errors.KeyringError as exc:
        msg = f"oauth_providers.{name}: the system keyring cannot be read ({type(exc).__name__})"
        raise ConfigError(msg) from None


async def client_secret(
    provider: OAuthProvider, environ: Mapping[str, str] | None = None
) -> str | None:
    """The provider's client secret, from the environment or the keyring (``None``: public).

    Raises:
        ConfigError: The variable is not set (or blank), or the keyring holds no secret.
    """
    if provider.client_secret_env is not None:
        value = (os.environ if environ is None else environ).get(provider.client_secret_env, "")
        if not value.strip():
            msg = (
                f"oauth_providers.{provider.name}: the client secret is read from "
                f"${provider.client_secret_env}, which is not set; export it"
            )
            raise ConfigError(msg)
        return value.strip()
    if provider.client_secret_keyring:
        import asyncio  # noqa: PLC0415 -- only here

        value = await asyncio.to_thread(_keyring_secret, provider.name)
        if not value:
            msg = (
                f"oauth_providers.{provider.name}: the system keyring holds no client secret; "
                f"store it with `keyring set {KEYRING_SERVICE} {provider.name}`"
            )
            raise ConfigError(msg)
        return value
    return None


async def oauth_config(
    provider: OAuthProvider, environ: Mapping[str, str] | None = None
) -> OAuthConfig:
    """The provider's :class:`OAuthConfig` (``rfc6749``): discovered, or from its endpoints.

    Explicit endpoints win over discovered ones.

    Raises:
        ConfigError: No secret where the table says it is, discovery failed, or the
            combination is impossible.
    """
    from ._oauth import OAuthConfig  # noqa: PLC0415 -- imports aiohttp; the CLI's --help does not

    secret = await client_secret(provider, environ)
    fields: dict[str, Any] = {
        key: getattr(provider, key)
        for key in ("authorization_url", "device_authorization_url", "revocation_url")
        if getattr(provider, key) is not None
    }
    if provider.client_auth is not None:
        fields["client_auth"] = provider.client_auth
    try:
        if provider.issuer is not None:
            if provider.token_url is not None:
                fields["token_url"] = provider.token_url
            return await OAuthConfig.discover(
                provider.issuer,
                client_id=provider.client_id,
                client_secret=secret,
                scopes=provider.scopes,
                **fields,
            )
        assert provider.token_url is not None  # noqa: S101 -- checked when parsed
        return OAuthConfig(
            provider.token_url,
            provider.client_id,
            client_secret=secret,
            scopes=provider.scopes,
            dialect="rfc6749",
            **fields,
        )
    except ConfigError as exc:
        msg = f"oauth_providers.{provider.name}: {exc}"
        raise ConfigError(msg) from None
