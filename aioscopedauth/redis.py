"""``RedisAuthStore``: one login shared by a fleet of hosts through Redis or Valkey.

An optional extra (``pip install 'aioscopedauth[redis]'``): it talks to the server with the
standard async client, ``redis.asyncio``, which speaks to Redis and to Valkey alike.

What lives in the server, for a store named ``default`` (the default prefix is
``aioscopedauth``; the braces keep every key of one login in one cluster slot)::

    aioscopedauth:{default}           a hash: version, writer, and the auth.json document
                                      (field "auth.json"; "sealed" instead when encrypted);
                                      a logout leaves the version and no document
    aioscopedauth:{default}:lock      the refresh lock: a random owner token with a TTL
    aioscopedauth:{default}:changes   the channel: {"event": "changed", "version": N, ...}

No token is ever in a key name or a channel message, and every write is one Lua script that
compares the version it read (compare-and-swap), writes and publishes, so a write is never seen
without its notice, and a host whose lock expired in the middle of a refresh (a long pause, a
partition) can never overwrite the tokens another host saved since: its version is stale.

The store remembers the newest login it read or wrote. When the server comes back empty (a
restart without persistence) or older than that (a restore from an old dump), the next read
puts the remembered login back, only where the server holds nothing newer, instead of logging
the fleet out. A logout leaves a marker (the version without a document), so a logout is never
mistaken for lost data.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import attrs

from ._commit import CommitResult
from ._errors import AuthDataError, ConfigError, StorageError
from ._model import AuthDotJson

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    import redis.asyncio

__all__ = ["RedisAuthStore"]

logger = logging.getLogger("aioscopedauth.redis")

DOC_FIELD = "auth.json"
"""The hash field that holds the plain ``auth.json`` document."""
SEALED_FIELD = "sealed"
"""The hash field that holds the AES-GCM sealed document (base64 of nonce + ciphertext)."""
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KEY_BYTES = 32
_NONCE_BYTES = 12
_MAX_ATTEMPTS = 100
"""Compare-and-swap attempts before an update gives up (each loses only to another write)."""
_LOCK_POLL_FIRST = 0.002
_LOCK_POLL_MAX = 0.05
_LISTEN_BACKOFF_FIRST = 0.05
_LISTEN_BACKOFF_MAX = 1.0
_LISTEN_POLL = 0.25
"""Seconds between two looks at the stop flag while no notice arrives (no command is sent)."""
_STOP_WAIT = 10.0

# KEYS[1] the login hash. ARGV: mode ("cas": only if the version is still ARGV[2], "" for
# nothing stored; "restore": only if nothing newer than ARGV[3] is stored), expected version,
# new version, field ("" for a logout marker), value, writer, channel.
# Returns {1, new version} when written, {0, the version found} when not.
_WRITE_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == 'cas' then
  if (current or '') ~= ARGV[2] then return {0, current or ''} end
elseif current and tonumber(current) >= tonumber(ARGV[3]) then
  return {0, current}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[3], 'writer', ARGV[6])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], ARGV[4], ARGV[5]) end
redis.call('PUBLISH', ARGV[7],
  '{"event":"changed","version":' .. ARGV[3] .. ',"writer":"' .. ARGV[6] .. '"}')
return {1, ARGV[3]}
"""
# KEYS[1] the lock. ARGV[1] the owner token, ARGV[2] the TTL in ms. Takes the lock if it is
# free; says "taken" also when it is ours already (a retried call whose first answer was lost).
_ACQUIRE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS[1] the lock. ARGV[1] the owner token. Deletes the lock only if it is still ours.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1] the lock. ARGV[1] the owner token, ARGV[2] the TTL in ms. Renews only our own lock.
_RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _where_from_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` → ``redis://user@host:6379/0`` (never a password)."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _where_from_client(client: redis.asyncio.Redis) -> str:
    options: dict[str, Any] = getattr(client.connection_pool, "connection_kwargs", {})
    if "path" in options:
        return f"unix://{options['path']}"
    user = f"{options['username']}@" if options.get("username") else ""
    return f"redis://{user}{options.get('host', 'localhost')}:{options.get('port', 6379)}"


@attrs.frozen
class _Entry:
    """What the server holds for a login: its version and document (``None``: logged out)."""

    version: int
    data: AuthDotJson | None = attrs.field(repr=False)


@attrs.define(eq=False)
class RedisAuthStore:
    """Keeps one login in Redis or Valkey, shared by every host that uses the same ``name``.

    Create it with :meth:`from_url` (the store owns that client and closes it in
    :meth:`aclose`), or from a ``redis.asyncio.Redis`` client you own (never closed here). Use
    it as ``async with``; nothing connects until the first call.

    The payload is the same ``auth.json`` document a :class:`~aioscopedauth.FileAuthStore`
    keeps, so a login copies between the two either way (``load`` from one, ``save`` to the
    other). Writes are compare-and-swap on a version stored with the document, and each one
    publishes a change notice (the version, never the payload) that :meth:`watch` delivers to
    every other store of the same name: an :class:`~aioscopedauth.AuthManager` adopts new
    tokens at once, and in steady state a request costs no round trip to the server.

    Args:
        client: A ``redis.asyncio.Redis`` client (binary or decoded responses).
        name: The login's name; hosts that share a name share the login. Letters, digits,
            ``.``, ``_`` and ``-``, at most 64: it is part of key names, so never a secret.
        encryption_key: 32 bytes: the document is sealed with AES-256-GCM (needs the
            ``cryptography`` package), so the server and its dumps hold no readable token.
            Every host of the fleet needs the same key.
        prefix: The first part of every key name.
        lock_ttl: Seconds the refresh lock lives without renewal. It is renewed every third of
            that while held; keep it longer than the token request's timeout
            (``OAuthConfig.timeout``, 30 s by default). When a host dies holding the lock,
            the others wait this long.
        lock_timeout: Seconds to wait for the refresh lock before giving up with a
            :class:`~aioscopedauth.StorageError`.
        command_timeout: Seconds each command to the server may take (sending it and reading
            its answer) before it fails with a :class:`~aioscopedauth.StorageError`; ``None``
            for no limit. The store applies it itself, so the client needs no
            ``socket_timeout`` (see :meth:`from_url` for why it should have none on
            Python 3.11).
        owns_client: Close ``client`` in :meth:`aclose` (set by :meth:`from_url`).
        where: How messages name the server (set by :meth:`from_url`; never a password).

    Raises:
        ConfigError: A bad ``name``, key or timing.
    """

    client: redis.asyncio.Redis = attrs.field(repr=False)
    name: str = attrs.field(default="default", kw_only=True)
    encryption_key: bytes | None = attrs.field(default=None, kw_only=True, repr=False)
    prefix: str = attrs.field(default="aioscopedauth", kw_only=True)
    lock_ttl: float = attrs.field(default=60.0, kw_only=True)
    lock_timeout: float = attrs.field(default=120.0, kw_only=True)
    command_timeout: float | None = attrs.field(default=5.0, kw_only=True)
    owns_client: bool = attrs.field(default=False, kw_only=True)
    where: str = attrs.field(default="", kw_only=True)

    _writer: str = attrs.field(init=False, repr=False)
    _seq: int = attrs.field(default=0, init=False, repr=False)
    _seen: _Entry | None = attrs.field(default=None, init=False, repr=False)
    _callbacks: list[Callable[[], None]] = attrs.field(factory=list, init=False, repr=False)
    _listener: asyncio.Task[None] | None = attrs.field(default=None, init=False, repr=False)
    _stopping: asyncio.Event = attrs.field(factory=asyncio.Event, init=False, repr=False)
    _aead: Any = attrs.field(default=None, init=False, repr=False)
    _warned_plain: bool = attrs.field(default=False, init=False, repr=False)
    _background: set[asyncio.Task[None]] = attrs.field(factory=set, init=False, repr=False)
    """Lock releases that outlive a cancelled caller (kept here so they are not collected)."""
    listening: asyncio.Event = attrs.field(factory=asyncio.Event, init=False, repr=False)
    """Set while the change listener is subscribed (cleared while it reconnects)."""
    notices: int = attrs.field(default=0, init=False)
    """Change notices received from other writers (for tests and benchmarks)."""

    def __attrs_post_init__(self) -> None:
        """Check the arguments and prepare the cipher."""
        if not _NAME.fullmatch(self.name):
            msg = (
                f"Bad Redis login name {self.name!r}: use 1 to 64 letters, digits, '.', '_' or "
                "'-' (it is part of key names)."
            )
            raise ConfigError(msg) from None
        if not _NAME.fullmatch(self.prefix):
            msg = "Bad Redis key prefix: use 1 to 64 letters, digits, '.', '_' or '-'."
            raise ConfigError(msg)
        if not self.lock_ttl > 0 or not self.lock_timeout > 0:
            msg = "lock_ttl and lock_timeout must be positive numbers of seconds."
            raise ConfigError(msg)
        if self.command_timeout is not None and not self.command_timeout > 0:
            msg = "command_timeout must be a positive number of seconds, or None for no limit."
            raise ConfigError(msg)
        if self.encryption_key is not None:
            try:
                from cryptography.hazmat.primitives.ciphers.aead import (  # noqa: PLC0415 -- optional
                    AESGCM,
                )
            except ImportError:
                msg = (
                    "Encrypting the Redis login needs the cryptography package: "
                    "pip install 'aioscopedauth[redis]'."
                )
                raise ConfigError(msg) from None
            if len(self.encryption_key) != _KEY_BYTES:
                msg = (
                    "encryption_key must be exactly 32 bytes (for example "
                    "bytes.fromhex(<64 hex digits>) or os.urandom(32))."
                )
                raise ConfigError(msg)
            try:
                self._aead = AESGCM(self.encryption_key)
            except TypeError:
                msg = "encryption_key must be bytes (for example bytes.fromhex(...))."
                raise ConfigError(msg) from None
        self._writer = secrets.token_hex(6)
        if not self.where:
            self.where = _where_from_client(self.client)

    @classmethod
    def from_url(  # noqa: PLR0913 -- the store's options plus the client's
        cls,
        url: str,
        *,
        name: str = "default",
        encryption_key: bytes | None = None,
        prefix: str = "aioscopedauth",
        lock_ttl: float = 60.0,
        lock_timeout: float = 120.0,
        command_timeout: float | None = 5.0,
        **client_options: Any,  # noqa: ANN401 -- passed through to redis.asyncio.from_url
    ) -> RedisAuthStore:
        """Create a store with its own client for ``url``.

        ``redis://[user:password@]host:port/db``, ``rediss://`` for TLS (certificate options
        as URL query parameters, e.g. ``?ssl_ca_certs=/path/ca.pem``) and ``unix://`` work as
        in ``redis.asyncio.from_url``; an ACL user and password go in the URL. Connecting may
        take 5 s and each command ``command_timeout``; a command that fails on a broken
        connection is retried once at once, on a new connection (no backoff: the library
        decides what to do next).

        The client gets no ``socket_timeout`` (a ``socket_timeout`` given here becomes
        ``command_timeout``): with one, redis-py sends every command inside
        ``asyncio.wait_for``, which on Python 3.11 can lose a cancellation that lands as the
        send completes (CPython issue 86296, fixed in 3.12), and a task that was told to stop
        would go on. The store's own timeout has no such gap. A client you create yourself
        keeps what you gave it.

        Args:
            url: The server's URL.
            name: See the class.
            encryption_key: See the class.
            prefix: See the class.
            lock_ttl: See the class.
            lock_timeout: See the class.
            command_timeout: See the class.
            **client_options: More options for ``redis.asyncio.from_url``.

        Returns:
            The store; it closes its client in :meth:`aclose`.

        Raises:
            ConfigError: The redis package is missing, or the URL or an argument is bad.
        """
        try:
            import redis.asyncio as aioredis  # noqa: PLC0415 -- optional extra
            from redis.asyncio.retry import Retry  # noqa: PLC0415 -- optional extra
            from redis.backoff import NoBackoff  # noqa: PLC0415 -- optional extra
        except ImportError:
            msg = "RedisAuthStore needs the redis package: pip install 'aioscopedauth[redis]'."
            raise ConfigError(msg) from None
        command_timeout = client_options.pop("socket_timeout", command_timeout)
        client_options.setdefault("socket_connect_timeout", 5.0)
        client_options.setdefault("socket_keepalive", True)
        # One immediate retry: a pooled connection that a server restart closed is replaced.
        # Every command of the store may run twice: writes are compare-and-swap, the lock
        # script knows its owner.
        client_options.setdefault("retry", Retry(NoBackoff(), 1))
        where = _where_from_url(url)
        try:
            client = aioredis.from_url(url, **client_options)
        except ValueError:
            # The parser's message may quote the URL, password included.
            msg = f"Bad Redis URL {where}: use redis://, rediss:// or unix://."
            raise ConfigError(msg) from None
        return cls(
            client,
            name=name,
            encryption_key=encryption_key,
            prefix=prefix,
            lock_ttl=lock_ttl,
            lock_timeout=lock_timeout,
            command_timeout=command_timeout,
            owns_client=True,
            where=where,
        )

    # -- names ------------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``redis``."""
        return "redis"

    @property
    def key(self) -> str:
        """The login's hash, e.g. ``aioscopedauth:{default}``."""
        return f"{self.prefix}:{{{self.name}}}"

    @property
    def lock_key(self) -> str:
        """The refresh lock's key, e.g. ``aioscopedauth:{default}:lock``."""
        return f"{self.key}:lock"

    @property
    def channel(self) -> str:
        """The change channel, e.g. ``aioscopedauth:{default}:changes``."""
        return f"{self.key}:changes"

    def __repr__(self) -> str:
        """Show where and which login, never a secret."""
        sealed = " sealed" if self._aead is not None else ""
        return f"<RedisAuthStore {self.where} name={self.name!r}{sealed}>"

    # -- lifecycle --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop listening for changes and close the client if this store created it."""
        self._callbacks.clear()
        await self._stop_listener()
        if self._background:
            # Lock releases of cancelled callers: each ends within one command.
            await asyncio.wait(set(self._background))
        if self.owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        """Return the store."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close it (see :meth:`aclose`)."""
        await self.aclose()

    # -- errors -----------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> StorageError:
        import redis.exceptions as rex  # noqa: PLC0415 -- optional extra

        if isinstance(
            exc, rex.AuthenticationError | rex.AuthorizationError | rex.NoPermissionError
        ) or (
            isinstance(exc, rex.ResponseError) and ("NOPERM" in str(exc) or "NOAUTH" in str(exc))
        ):
            # These name the user and the command, never an argument.
            detail = str(exc)[:300]
            msg = (
                f"{what}: Redis at {self.where} refused the credentials or the command "
                f"({detail}). Check the user and password in the URL and the user's ACL "
                f"(it needs the keys {self.prefix}:* and the channel {self.channel})."
            )
        elif isinstance(exc, rex.ConnectionError | rex.TimeoutError | OSError):
            detail = (
                f"no answer within {self.command_timeout:g} s"
                if type(exc) is TimeoutError and self.command_timeout is not None
                else f"{type(exc).__name__}: {str(exc)[:200]}"
            )
            msg = (
                f"{what}: Redis at {self.where} is unreachable ({detail}). Requests keep "
                "using the cached token while it is valid; a refresh works again once Redis "
                "is back. Check that it runs and that the URL is right."
            )
        else:
            # Other errors may quote a command's arguments; show only the type.
            msg = f"{what}: Redis at {self.where} failed with {type(exc).__name__}. Retry."
        return StorageError(msg)

    async def _call(self, what: str, command: Awaitable[Any]) -> Any:  # noqa: ANN401 -- Redis replies
        import redis.exceptions as rex  # noqa: PLC0415 -- optional extra

        try:
            async with asyncio.timeout(self.command_timeout):
                return await command
        except (rex.RedisError, OSError) as exc:
            raise self._error(what, exc) from None

    async def _script(self, what: str, script: str, keys: list[str], args: list[Any]) -> Any:  # noqa: ANN401 -- Redis replies
        return await self._call(what, self._eval(script, keys, args))

    async def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:  # noqa: ANN401 -- Redis replies
        import redis.exceptions as rex  # noqa: PLC0415 -- optional extra

        sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        try:
            return await self.client.evalsha(sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            # A restarted server forgot its scripts; EVAL runs it and caches it again.
            return await self.client.eval(script, len(keys), *keys, *args)

    # -- the document -----------------------------------------------------------------------

    def _seal(self, data: AuthDotJson) -> tuple[str, str]:
        text = data.to_json()
        if self._aead is None:
            return DOC_FIELD, text
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode(), self.key.encode())
        return SEALED_FIELD, base64.b64encode(nonce + sealed).decode()

    def _open(self, fields: dict[str, str]) -> AuthDotJson | None:
        sealed = fields.get(SEALED_FIELD)
        plain = fields.get(DOC_FIELD)
        if sealed is not None:
            text = self._unseal(sealed)
        elif plain is not None:
            if self._aead is not None and not self._warned_plain:
                self._warned_plain = True
                logger.warning(
                    "The login in Redis key %s is not encrypted; the next write seals it",
                    self.key,
                )
            text = plain
        else:
            return None
        try:
            return AuthDotJson.from_json(text)
        except AuthDataError as exc:
            msg = (
                f"The login in Redis key {self.key} at {self.where} is not a valid auth.json "
                f"({exc}). Log in again, or save a good login over it."
            )
            raise StorageError(msg) from None

    def _unseal(self, sealed: str) -> str:
        if self._aead is None:
            msg = (
                f"The login in Redis key {self.key} at {self.where} is encrypted: pass the "
                "fleet's encryption_key to RedisAuthStore."
            )
            raise StorageError(msg)
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415 -- optional extra

        try:
            raw = base64.b64decode(sealed, validate=True)
            text = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], self.key.encode())
            return str(text.decode())
        except (InvalidTag, binascii.Error, ValueError):
            msg = (
                f"The login in Redis key {self.key} at {self.where} cannot be decrypted: it was "
                "sealed with another encryption_key (or altered). Use the key the fleet uses, "
                "or log in again to replace it."
            )
            raise StorageError(msg) from None

    async def _read_raw(self) -> _Entry | None:
        raw = await self._call("Could not read the login", self.client.hgetall(self.key))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            version = int(fields["version"])
        except (KeyError, ValueError):
            msg = (
                f"Redis key {self.key} at {self.where} holds no version: it was not written by "
                "aioscopedauth. Delete it or choose another name."
            )
            raise StorageError(msg) from None
        return _Entry(version, self._open(fields))

    async def _read(self) -> _Entry | None:
        """Read the login; put back the remembered one when the server lost it."""
        for _ in range(_MAX_ATTEMPTS):
            entry = await self._read_raw()
            seen = self._seen
            if seen is None or (entry is not None and entry.version >= seen.version):
                if entry is not None:
                    self._seen = entry
                return entry
            if seen.data is None and entry is None:
                return None  # logged out, and the marker was lost with the rest: still out
            # The server holds nothing, or an older version than this host saw: it restarted
            # without persistence or came back from an old dump. Put the newest login back
            # (only where nothing newer was written meanwhile) instead of logging out.
            found = "nothing" if entry is None else f"version {entry.version}"
            logger.warning(
                "Redis at %s holds %s for %s, older than version %d seen here (restarted or "
                "restored?); writing it back",
                self.where,
                found,
                self.key,
                seen.version,
            )
            await self._write("restore", None, seen.version, seen.data)
        msg = f"Could not read the login at {self.where}: it kept changing. Retry."
        raise StorageError(msg)

    async def _write(
        self, mode: str, expected: int | None, version: int, data: AuthDotJson | None
    ) -> bool:
        field, value = ("", "") if data is None else self._seal(data)
        self._seq += 1
        reply = await self._script(
            "Could not write the login",
            _WRITE_SCRIPT,
            [self.key],
            [
                mode,
                "" if expected is None else str(expected),
                str(version),
                field,
                value,
                f"{self._writer}.{self._seq}",
                self.channel,
            ],
        )
        written = int(reply[0]) == 1
        if written:
            self._seen = _Entry(version, data)
        return written

    # -- the AuthStore protocol -------------------------------------------------------------

    async def load(self) -> AuthDotJson | None:
        """Read the login.

        Returns:
            The payload, or ``None`` when nothing is stored (or after a logout).

        Raises:
            StorageError: Redis is unreachable or refused us, or the stored login is corrupt
                or sealed with another key (it is left untouched).
        """
        entry = await self._read()
        return None if entry is None else entry.data

    async def save(self, data: AuthDotJson) -> None:
        """Store ``data`` as the login (a compare-and-swap loop that always ends with it).

        Args:
            data: The payload.

        Raises:
            StorageError: Redis is unreachable or refused the write.
        """
        await self.update(lambda _current: data)

    async def delete(self) -> bool:
        """Log out: leave the version and no document, and tell every host.

        Returns:
            Whether a login was stored.

        Raises:
            StorageError: Redis is unreachable or refused the write.
        """
        result = await self.update(lambda _current: None)
        return result.before is not None

    async def update(
        self, change: Callable[[AuthDotJson | None], AuthDotJson | None]
    ) -> CommitResult:
        """Read, decide and write as one compare-and-swap on the stored version.

        When another host writes between the read and the write, the read and ``change`` run
        again on what it wrote, so ``change`` always decides on the latest login.

        Args:
            change: Given the stored payload (or ``None``), returns the payload to store: the
                same object to keep it, ``None`` to log out. It must be quick and pure.

        Returns:
            What was stored before and after, and whether this call wrote.

        Raises:
            StorageError: Redis is unreachable or refused us, or the stored login is corrupt
                (nothing is written).
        """
        for _ in range(_MAX_ATTEMPTS):
            entry = await self._read()
            before = None if entry is None else entry.data
            after = change(before)
            if after is before or (after is None and entry is not None and before is None):
                return CommitResult(before, before, written=False)
            current = 0 if entry is None else entry.version
            floor = 0 if self._seen is None else self._seen.version
            expected = None if entry is None else entry.version
            if await self._write("cas", expected, max(current, floor) + 1, after):
                return CommitResult(before, after, written=True)
            logger.debug("Another host wrote %s meanwhile; deciding again", self.key)
        msg = f"Could not write the login at {self.where}: other hosts kept writing it. Retry."
        raise StorageError(msg)

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Return the fleet's refresh lock (held across a token request).

        A Redis key set only if absent, to a random owner token, with a TTL of ``lock_ttl``
        renewed every third of it while held, and deleted on exit only if it still holds the
        owner token (a lock that expired and was taken by another host is left to it).

        Returns:
            An async context manager; entering it raises :class:`~aioscopedauth.StorageError`
            when Redis is
            unreachable or the lock was not free within ``lock_timeout``.
        """
        return self._held()

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[None]:
        owner = secrets.token_hex(16)
        ttl_ms = max(1, int(self.lock_ttl * 1000))
        await self._acquire(owner, ttl_ms)
        stop = asyncio.Event()
        renewer = asyncio.get_running_loop().create_task(
            self._renew(owner, ttl_ms, stop), name="aioscopedauth-redis-lock-renewal"
        )
        try:
            yield
        finally:
            # The renewer is asked to stop, never cancelled: a cancellation that a client with
            # a socket_timeout loses on Python 3.11 (see from_url) would leave it renewing the
            # lock for ever, and every host waiting for it. The release runs in a task of its
            # own so that a caller cancelled here still leaves the lock free.
            stop.set()
            await asyncio.shield(self._in_background(self._release(owner, renewer)))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name="aioscopedauth-redis-unlock")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _acquire(self, owner: str, ttl_ms: int) -> None:
        deadline = time.monotonic() + self.lock_timeout
        delay = _LOCK_POLL_FIRST
        while True:
            attempt = asyncio.get_running_loop().create_task(
                self._script(
                    "Could not take the refresh lock",
                    _ACQUIRE_SCRIPT,
                    [self.lock_key],
                    [owner, ttl_ms],
                )
            )
            try:
                got = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                # The server may set the lock after the caller is gone: free it then.
                self._in_background(self._release_after(attempt, owner))
                raise
            if int(got):
                return
            if time.monotonic() >= deadline:
                msg = (
                    f"Timed out after {self.lock_timeout:g} s waiting for the refresh lock "
                    f"{self.lock_key} at {self.where}: another host is refreshing the login. "
                    "Try again."
                )
                raise StorageError(msg)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LOCK_POLL_MAX)

    async def _release_after(self, attempt: asyncio.Task[Any], owner: str) -> None:
        await asyncio.wait({attempt})
        if not attempt.cancelled() and attempt.exception() is None:
            await self._release(owner, None)

    async def _release(self, owner: str, renewer: asyncio.Task[None] | None) -> None:
        if renewer is not None:
            # It sees the stop flag within one command (bounded by command_timeout).
            limit = None if self.command_timeout is None else self.command_timeout + 1
            await asyncio.wait({renewer}, timeout=limit)
            if not renewer.done():
                renewer.cancel()  # a client without timeouts: renewing now is harmless
        try:
            await self._script(
                "Could not release the refresh lock", _RELEASE_SCRIPT, [self.lock_key], [owner]
            )
        except StorageError as exc:
            logger.warning("%s; it expires by itself after its TTL", exc)

    async def _renew(self, owner: str, ttl_ms: int, stop: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ttl_ms / 3000):
                    await stop.wait()
            if stop.is_set():
                return
            try:
                kept = await self._script(
                    "Could not renew the refresh lock",
                    _RENEW_SCRIPT,
                    [self.lock_key],
                    [owner, ttl_ms],
                )
            except StorageError as exc:
                logger.info("%s; trying again", exc)
                continue
            if not int(kept) and not stop.is_set():
                logger.warning(
                    "The refresh lock %s expired while held (a pause longer than %g s?); the "
                    "compare-and-swap still keeps any newer tokens safe",
                    self.lock_key,
                    self.lock_ttl,
                )
                return

    # -- change notices ---------------------------------------------------------------------

    def watch(self, callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        """Call ``callback`` whenever another writer changes the login (the optional hook).

        The first call starts one pub/sub connection for this store (it reconnects by itself
        with a backoff). ``callback`` is also called each time the subscription starts or
        comes back, since notices sent meanwhile were missed. It runs in the event loop and
        must be quick (schedule the reload; do not await it).

        Args:
            callback: Called with no argument.

        Returns:
            An async function that stops these calls (and the connection, after the last).
        """
        self._callbacks.append(callback)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="aioscopedauth-redis-listener"
            )

        async def stop() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)
            if not self._callbacks:
                await self._stop_listener()

        return stop

    async def _stop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None or listener.done():
            return
        # Asked, not cancelled: a client with a socket_timeout can lose a cancellation on
        # Python 3.11 (see from_url) and go on listening. The loop looks at the flag at least
        # every poll.
        self._stopping.set()
        done, _ = await asyncio.wait({listener}, timeout=_STOP_WAIT)
        if not done:
            listener.cancel()
            await asyncio.wait({listener}, timeout=_STOP_WAIT)
        self._stopping = asyncio.Event()

    def _fire(self) -> None:
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                logger.exception("A change callback of the Redis store failed")

    async def _listen(self) -> None:
        import redis.exceptions as rex  # noqa: PLC0415 -- optional extra

        delay = _LISTEN_BACKOFF_FIRST
        failing = False
        stopping = self._stopping
        while not stopping.is_set():
            pubsub = self.client.pubsub()
            try:
                async with asyncio.timeout(self.command_timeout):
                    await pubsub.subscribe(self.channel)
                # Wait for the confirmation: only then are later notices sure to arrive.
                while await pubsub.get_message(timeout=_LISTEN_POLL) is None:
                    if stopping.is_set():
                        return
                self.listening.set()
                if failing:
                    logger.info("Listening for login changes at %s again", self.where)
                failing = False
                delay = _LISTEN_BACKOFF_FIRST
                self._fire()  # notices sent before (or while reconnecting) were missed
                while not stopping.is_set():
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_LISTEN_POLL
                    )
                    if message is not None:
                        self._notice(message.get("data"))
            except (rex.RedisError, OSError) as exc:
                if not failing:
                    logger.warning("%s; reconnecting", self._error("Stopped listening", exc))
                failing = True
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            delay = min(delay * 2, _LISTEN_BACKOFF_MAX)

    def _notice(self, data: object) -> None:
        try:
            notice = json.loads(_text(data))
            version = int(notice["version"])
            writer = str(notice["writer"])
        except (ValueError, KeyError, TypeError):
            logger.debug("Ignoring a malformed notice on %s", self.channel)
            return
        if writer.split(".", 1)[0] == self._writer:
            return  # our own write
        seen = self._seen
        if seen is not None and version <= seen.version:
            return  # already read
        self.notices += 1
        self._fire()
