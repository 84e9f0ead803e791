"""``RedisAuthStore``: one login shared by a fleet of hosts through Redis or Valkey.

An optional extra (``pip install 'aioscopedauth[redis]'``): it talks to the server with the
standard async client, ``redis.asyncio``, which speaks to Redis and to Valkey alike.

What lives in the server, for a store named ``default`` (the default prefix is
``aioscopedauth``; the braces keep every key of one login in one cluster slot)::

    aioscopedauth:{default}           a hash: version, writer, at (when it was written), and
                                      the auth.json document (field "auth.json"; "sealed"
                                      instead when encrypted); a logout leaves the version
                                      and no document
    aioscopedauth:{default}:lock      the refresh lock: a random owner token with a TTL
    aioscopedauth:{default}:lock:void:<owner>
                                      a lock request given up on (short-lived): if it still
                                      reaches the server, it takes nothing
    aioscopedauth:{default}:changes   the channel: {"event": "changed", "version": N, ...}

No token is ever in a key name or a channel message, and every write is one Lua script that
compares the version it read (compare-and-swap), writes and publishes, so a write is never seen
without its notice, and a host whose lock expired in the middle of a refresh (a long pause, a
partition) can never overwrite the tokens another host saved since: its version is stale.

The store remembers the newest login it read or wrote. When the server comes back empty (a
restart without persistence) or older than that (a restore from an old dump), the next read
puts the remembered login back, only where nothing newer *in time* was written, instead of
logging the fleet out. "Newer" is decided by ``at``: the server's clock (``TIME``, in
microseconds) when the login was written, never less than the ``at`` of the login it replaced
or that the writer had seen, so it orders writes across restarts, where version numbers start
again from wherever the first writer after the loss was. A login saved after a restart is
never overwritten by a host that remembers an older one. A logout leaves a marker (the version
without a document), so a logout is never mistaken for lost data.
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
    import redis.asyncio.client

    from ._storage import AuthStore

__all__ = ["RedisAuthStore", "check_url"]

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
_FAILOVER_BACKOFF_FIRST = 0.05
_FAILOVER_BACKOFF_MAX = 1.0

# Each script also says how many replicas the primary has connected now (0 where the user's
# ACL denies INFO): the store then asks for a replica's acknowledgement (WAIT) only where one
# can come.
_REPLICAS = """
local function replicas()
  local info = redis.pcall('INFO', 'replication')
  if type(info) ~= 'string' then return 0 end
  return tonumber(string.match(info, 'connected_slaves:(%d+)')) or 0
end
"""
# KEYS[1] the login hash. ARGV: mode ("cas": only if the version is still ARGV[2], "" for
# nothing stored; "restore": only if nothing as new as (ARGV[8], ARGV[3]) is stored), expected
# version, new version, field ("" for a logout marker), value, writer, channel, and "at": for
# "cas" the newest "at" the writer has seen (the new one is later than it, than the stored
# one and than the server's clock), for "restore" the remembered login's own.
# Returns {1, new version, its at, replicas} when written, {0, the version found} when not.
_WRITE_SCRIPT = (
    _REPLICAS
    + """
local current = redis.call('HGET', KEYS[1], 'version')
local stored_at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0') or 0
local at
if ARGV[1] == 'cas' then
  if (current or '') ~= ARGV[2] then return {0, current or ''} end
  local now = redis.call('TIME')
  at = math.max(tonumber(now[1]) * 1000000 + tonumber(now[2]), stored_at + 1,
                tonumber(ARGV[8]) + 1)
else
  at = tonumber(ARGV[8])
  if current and (stored_at > at or
                  (stored_at == at and (tonumber(current) or 0) >= tonumber(ARGV[3]))) then
    return {0, current}
  end
end
local stamp = string.format('%.0f', at)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[3], 'writer', ARGV[6], 'at', stamp)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], ARGV[4], ARGV[5]) end
redis.call('PUBLISH', ARGV[7],
  '{"event":"changed","version":' .. ARGV[3] .. ',"writer":"' .. ARGV[6] .. '","at":' ..
  stamp .. '}')
return {1, ARGV[3], stamp, replicas()}
"""
)
# KEYS[1] the lock, KEYS[2] its owner's "given up" mark. ARGV[1] the owner token, ARGV[2] the
# TTL in ms. Takes the lock if it is free; says "taken" also when it is ours already (a retried
# call whose first answer was lost); takes nothing for an owner that gave up (a request that
# reached the server after its caller had stopped waiting and released). Returns {taken,
# replicas}.
_ACQUIRE_SCRIPT = (
    _REPLICAS
    + """
if redis.call('GET', KEYS[2]) then return {0, 0} end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])  -- a write: the WAIT after it covers the first take
  return {1, replicas()}
end
if holder then return {0, 0} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, replicas()}
"""
)
# KEYS[1] the lock, KEYS[2] the owner's "given up" mark. ARGV[1] the owner token, ARGV[2] the
# TTL in ms. For a caller whose take failed or was cancelled, so it cannot know whether the
# server set the lock: frees it if ours, and marks the owner so that a take still on its way
# takes nothing (the mark lives as long as the lock would have).
_ABANDON_SCRIPT = (
    _REPLICAS
    + """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return {1, replicas()}
"""
)
# KEYS[1] the lock. ARGV[1] the owner token. Deletes the lock only if it is still ours.
# KEYS[2] the owner's "given up" mark, set too: always a write, so that the WAIT after a
# retried release (whose first run deleted the lock but was not acknowledged) covers that
# first run as well. Returns {deleted, replicas}.
_RELEASE_SCRIPT = (
    _REPLICAS
    + """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
local deleted = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then deleted = redis.call('DEL', KEYS[1]) end
return {deleted, replicas()}
"""
)
# KEYS[1] the lock. ARGV[1] the owner token, ARGV[2] the TTL in ms. Renews only our own lock.
_RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stamp_of(value: object) -> int:
    """The ``at`` of a login (0 when it has none: written by an older release, or garbled)."""
    try:
        return max(0, int(_text(value)))
    except (TypeError, ValueError):
        return 0


_URL_FORM = (
    "redis://[user:password@]host:port/db (or rediss://, unix:///path, "
    "redis+sentinel://[user:password@]host:port,host:port/SERVICE/db)"
)
_URL_SCHEMES = ("redis", "rediss", "unix")
_DB_PATH = re.compile(r"/?[0-9]*")


def _bad_url(problem: str) -> ConfigError:
    # Never quote the URL or a part of it: a password with an unencoded '/', '?' or '#' ends
    # up in the "port", the path or the query.
    return ConfigError(
        f"Bad Redis URL: {problem}. Write it as {_URL_FORM}, with special characters in the "
        "user and password percent-encoded."
    )


def _where_from_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` → ``redis://user@host:6379/0`` (never a password).

    Raises:
        ConfigError: The URL cannot be parsed (its scheme, host, port or database).
    """
    where, problem = _parse_url(url)
    if problem is not None:
        raise _bad_url(problem)
    return where


def _parse_url(url: object) -> tuple[str, str | None]:  # noqa: PLR0911 -- one return per problem
    """Return how messages show ``url``, and what is wrong with it (``None``: nothing)."""
    if not isinstance(url, str):
        return "", f"it must be a string, not {type(url).__name__}"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "", "it cannot be parsed (an unclosed '[' around an IPv6 address?)"
    if parts.scheme not in _URL_SCHEMES:
        return "", "it must start with redis://, rediss://, unix:// or redis+sentinel://"
    if parts.scheme == "unix":
        if not parts.path:
            return "", "a unix:// URL needs the socket's path"
        return f"unix://{parts.path}", None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "", "the port must be a number from 1 to 65535"
    if "@" in parts.path or not _DB_PATH.fullmatch(parts.path):
        return "", "the database after the host must be a number, such as /0"
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or "localhost"
    shown_host = f"[{host}]" if ":" in host else host
    shown_port = f":{port}" if port else ""
    return f"{parts.scheme}://{user}{shown_host}{shown_port}{parts.path}", None


_SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
_SENTINEL_PORT = 26379
_SENTINEL_FAILOVER_TIMEOUT = 30.0
"""How long a store on a ``redis+sentinel://`` URL retries while the primary is unreachable."""
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_DIGITS = re.compile(r"[0-9]{1,9}")


def check_url(url: str) -> None:
    """Check a Redis URL as :meth:`RedisAuthStore.from_url` would, without connecting.

    Args:
        url: A ``redis://``, ``rediss://``, ``unix://`` or ``redis[s]+sentinel://`` URL.

    Raises:
        ConfigError: What is wrong with it (the message never quotes the URL).
    """
    if _is_sentinel_url(url):
        _parse_sentinel_url(url)
    else:
        _where_from_url(url)


def _is_sentinel_url(url: object) -> bool:
    return isinstance(url, str) and url.startswith(tuple(f"{s}://" for s in _SENTINEL_SCHEMES))


@attrs.frozen
class _SentinelUrl:
    """A parsed ``redis+sentinel://`` URL."""

    scheme: str
    username: str | None
    password: str | None = attrs.field(repr=False)
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    options: dict[str, Any] = attrs.field(repr=False)

    @property
    def where(self) -> str:
        """How messages name it (never a password)."""
        user = f"{self.username}@" if self.username else ""
        hosts = ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.sentinels
        )
        return f"{self.scheme}://{user}{hosts}/{self.service}/{self.db}"

    def client(self, client_options: dict[str, Any]) -> tuple[redis.asyncio.Redis, Any]:
        """The client of the primary, and the ``Sentinel`` that finds it (both to close)."""
        from redis.asyncio.sentinel import Sentinel  # noqa: PLC0415 -- optional extra

        options = {**self.options, **client_options}
        sentinel_options = options.pop("sentinel_kwargs", None)
        if sentinel_options is None:
            # How to reach a sentinel: the same connect timeout and keepalive, no socket
            # timeout (the store bounds each command, discovery included).
            sentinel_options = {
                key: value
                for key, value in options.items()
                if key in ("socket_connect_timeout", "socket_keepalive")
            }
        if self.username is not None:
            options.setdefault("username", self.username)
        if self.password is not None:
            options.setdefault("password", self.password)
        options.setdefault("db", self.db)
        if self.scheme == "rediss+sentinel":
            options["ssl"] = True
        sentinel = Sentinel(list(self.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        return sentinel.master_for(self.service, **options), sentinel


def _parse_sentinel_url(url: str) -> _SentinelUrl:
    """Parse ``redis+sentinel://[user:password@]h1:p1,h2:p2/SERVICE[/DB][?options]``.

    Raises:
        ConfigError: A part is missing or malformed (the message never quotes the URL).
    """
    followed, problem = _sentinel_parts(url)
    if followed is None:
        raise _bad_url(problem or "it cannot be parsed")
    return followed


_NO_SERVICE = (
    "a redis+sentinel:// URL names the service after the sentinels, as in "
    "redis+sentinel://h1:26379,h2:26379/mymaster/0"
)
_BAD_SENTINEL = "each sentinel must be host:port, with a port from 1 to 65535"


def _sentinel_parts(url: str) -> tuple[_SentinelUrl | None, str | None]:  # noqa: PLR0911 -- one return per problem
    from urllib.parse import unquote  # noqa: PLC0415 -- only for this rare form

    from redis.asyncio.connection import parse_url  # noqa: PLC0415 -- optional extra

    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    if "#" in rest:
        return None, "it holds a '#' (percent-encode it in a password)"
    netloc, _, path = rest.partition("/")
    userinfo, _, hostlist = netloc.rpartition("@")
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        try:
            parts = urlsplit(f"//{item}")
            port = parts.port
        except ValueError:
            return None, _BAD_SENTINEL
        if not parts.hostname or port == 0:
            return None, _BAD_SENTINEL
        sentinels.append((parts.hostname, port or _SENTINEL_PORT))
    segments = path.split("/") if path else []
    if not segments or not _SERVICE.fullmatch(segments[0]):
        return None, _NO_SERVICE
    if len(segments) > 2 or (len(segments) == 2 and not _DIGITS.fullmatch(segments[1])):  # noqa: PLR2004 -- service and db
        return None, "the database after the service must be a number, such as /0"
    db = int(segments[1]) if len(segments) == 2 else 0  # noqa: PLR2004 -- service and db
    try:
        options = dict(parse_url(f"redis://localhost/?{query}")) if query else {}
    except ValueError:
        return None, "one of its query options has a bad value (socket or ssl options)"
    options.pop("host", None)
    username: str | None = None
    password: str | None = None
    if userinfo:
        user_text, has_password, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if has_password else None
    service = segments[0]
    return _SentinelUrl(scheme, username, password, tuple(sentinels), service, db, options), None


def _unknown_option(exc: TypeError) -> ConfigError:
    found = re.search(r"argument '(\w+)'", str(exc))
    name = found.group(1) if found else ""
    hint = (
        "ssl options need a rediss:// URL"
        if name.startswith("ssl")
        else "remove it or correct its spelling"
    )
    shown = f" {name!r}" if name else ""
    return ConfigError(
        f"Bad Redis client option{shown} (in the URL's query or the keyword arguments): "
        f"redis.asyncio does not take it here; {hint}."
    )


def _where_from_client(client: redis.asyncio.Redis) -> str:
    service = getattr(client.connection_pool, "service_name", None)
    if service is not None:  # a client from redis.asyncio.sentinel.Sentinel.master_for
        return f"redis+sentinel://.../{service}"
    options: dict[str, Any] = getattr(client.connection_pool, "connection_kwargs", {})
    if "path" in options:
        return f"unix://{options['path']}"
    user = f"{options['username']}@" if options.get("username") else ""
    return f"redis://{user}{options.get('host', 'localhost')}:{options.get('port', 6379)}"


def _timing_problem(
    lock_ttl: float, lock_timeout: float, command_timeout: float | None, ping_interval: float
) -> str | None:
    """What is wrong with the store's timings (``None``: nothing)."""
    if not lock_ttl > 0 or not lock_timeout > 0:
        return "lock_ttl and lock_timeout must be positive numbers of seconds."
    if command_timeout is not None and not command_timeout > 0:
        return "command_timeout must be a positive number of seconds, or None for no limit."
    if not ping_interval > 0:
        return "ping_interval must be a positive number of seconds."
    return None


def _durability_problem(
    min_replicas: int | None, replica_timeout: float, failover_timeout: float
) -> str | None:
    """What is wrong with the replica and failover settings (``None``: nothing)."""
    count: object = min_replicas  # typed, but a caller may pass anything
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        return "min_replicas must be None (one when the primary has replicas) or a count >= 0."
    if not replica_timeout > 0:
        return "replica_timeout must be a positive number of seconds."
    if not failover_timeout >= 0:
        return "failover_timeout must be a number of seconds >= 0."
    return None


def _in_failover(exc: BaseException) -> bool:
    """Whether a failed command may work once a failover is over (never a refusal)."""
    import redis.exceptions as rex  # noqa: PLC0415 -- optional extra

    if isinstance(exc, rex.AuthenticationError | rex.AuthorizationError):
        return False
    return isinstance(exc, rex.ConnectionError | rex.TimeoutError | rex.ReadOnlyError | OSError)


def _taken_on(reply: Any) -> object:  # noqa: ANN401 -- a Redis reply
    """For a lock take: the replicas the primary has, or ``None`` when not taken."""
    return reply[1] if int(reply[0]) else None


def _replicas_of(reply: Any) -> object:  # noqa: ANN401 -- a Redis reply
    """For a lock release (always a write): the replicas the primary has."""
    return reply[1]


def _remove_if(login: AuthDotJson) -> Callable[[AuthDotJson | None], AuthDotJson | None]:
    """A change that removes the stored login only if it is still ``login``."""

    def change(current: AuthDotJson | None) -> AuthDotJson | None:
        return None if current == login else current

    return change


@attrs.frozen
class _Entry:
    """What the server holds for a login: its version and document (``None``: logged out)."""

    version: int
    at: int
    """When it was written: the server's clock in microseconds, kept increasing (0: unknown)."""
    data: AuthDotJson | None = attrs.field(repr=False)

    @property
    def stamp(self) -> tuple[int, int]:
        """What orders two logins in time: ``at``, then the version."""
        return (self.at, self.version)


@attrs.define(eq=False)
class RedisAuthStore:
    """Keeps one login in Redis or Valkey, shared by every host that uses the same ``name``.

    Create it with :meth:`from_url` (the store owns that client and closes it in
    :meth:`aclose`), or from a ``redis.asyncio.Redis`` client you own (never closed here). Use
    it as ``async with``; nothing connects until the first call.

    The payload is the same ``auth.json`` document a :class:`~aioscopedauth.FileAuthStore`
    keeps; :meth:`move_login_from` moves a machine's login in (a copy would leave two holders
    of one single-use refresh token). Writes are compare-and-swap on a version stored with
    the document, and each one publishes a change notice (the version, never the payload)
    that :meth:`watch` delivers to every other store of the same name: an
    :class:`~aioscopedauth.AuthManager` adopts new tokens at once, and in steady state a
    request costs no round trip to the server.

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
        ping_interval: Seconds of silence on the change listener's connection before it sends
            a ``PING``; no answer within ``command_timeout`` means the connection died without
            a word (a NAT or a firewall that dropped it), and the listener connects and
            subscribes again.
        min_replicas: How many replicas must acknowledge a write (``WAIT``) before it counts
            as saved: ``None`` (the default) asks for one whenever the primary reports a
            connected replica, and for none otherwise (a lone server: today's behaviour, where
            a failover can lose the last write). Until the acknowledgement comes, the write
            raises :class:`~aioscopedauth.StorageError`: an
            :class:`~aioscopedauth.AuthManager` keeps refreshed tokens in memory, serves them
            and writes them again on its next refresh (to the new primary after a failover).
            ``0`` never waits. The lock's take and release wait the same way, so a lock (or
            its release) lost in a failover cannot let two hosts spend one refresh token, or
            stall the fleet for a TTL.
        replica_timeout: Seconds a write waits for the replicas' acknowledgement.
        failover_timeout: Seconds a command keeps being retried (with a backoff) while the
            server is unreachable, answers nothing or is a read-only replica: a failover in
            progress. ``0`` fails at once. :meth:`from_url` sets 30 for a
            ``redis+sentinel://`` URL. Requests with a valid cached token never wait for it;
            a refresh does, then resumes on the new primary.
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
    ping_interval: float = attrs.field(default=15.0, kw_only=True)
    min_replicas: int | None = attrs.field(default=None, kw_only=True)
    replica_timeout: float = attrs.field(default=2.0, kw_only=True)
    failover_timeout: float = attrs.field(default=0.0, kw_only=True)
    owns_client: bool = attrs.field(default=False, kw_only=True)
    where: str = attrs.field(default="", kw_only=True)

    _writer: str = attrs.field(init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False, repr=False)
    """The event loop that first used the store; the only one it (and its client) works on."""
    _seq: int = attrs.field(default=0, init=False, repr=False)
    _seen: _Entry | None = attrs.field(default=None, init=False, repr=False)
    _unconfirmed: tuple[int, int] | None = attrs.field(default=None, init=False, repr=False)
    """The stamp of this store's last write that no replica acknowledged yet."""
    _callbacks: list[Callable[[], None]] = attrs.field(factory=list, init=False, repr=False)
    _listener: asyncio.Task[None] | None = attrs.field(default=None, init=False, repr=False)
    _stopping: asyncio.Event = attrs.field(factory=asyncio.Event, init=False, repr=False)
    _closing: asyncio.Event = attrs.field(factory=asyncio.Event, init=False, repr=False)
    """Set by :meth:`aclose`: lock releases still retrying make one last attempt, no more."""
    _aead: Any = attrs.field(default=None, init=False, repr=False)
    _sentinel: Any = attrs.field(default=None, init=False, repr=False)
    """The ``redis.asyncio.sentinel.Sentinel`` behind a ``redis+sentinel://`` URL (closed too)."""
    _warned_plain: bool = attrs.field(default=False, init=False, repr=False)
    _background: set[asyncio.Task[None]] = attrs.field(factory=set, init=False, repr=False)
    """Lock releases that outlive a failed or cancelled caller (kept so they are not collected)."""
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
        problem = _timing_problem(
            self.lock_ttl, self.lock_timeout, self.command_timeout, self.ping_interval
        )
        if problem is None:
            problem = _durability_problem(
                self.min_replicas, self.replica_timeout, self.failover_timeout
            )
        if problem is not None:
            raise ConfigError(problem)
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
        ping_interval: float = 15.0,
        min_replicas: int | None = None,
        replica_timeout: float = 2.0,
        failover_timeout: float | None = None,
        **client_options: Any,  # noqa: ANN401 -- passed through to redis.asyncio.from_url
    ) -> RedisAuthStore:
        """Create a store with its own client for ``url``.

        ``redis://[user:password@]host:port/db``, ``rediss://`` for TLS (certificate options
        as URL query parameters, e.g. ``?ssl_ca_certs=/path/ca.pem``) and ``unix://`` work as
        in ``redis.asyncio.from_url``; an ACL user and password go in the URL.

        ``redis+sentinel://[user:password@]host1:port1,host2:port2,.../SERVICE[/DB]`` (and
        ``rediss+sentinel://`` for TLS to the servers) follows the primary of ``SERVICE``
        through Sentinel, with redis-py's own Sentinel support: each new connection asks the
        sentinels (port 26379 when none is given) where the primary is, so after a failover
        the store, its lock and its change listener move to the new primary by themselves.
        The user and password are the servers'; sentinels that need their own go in
        ``sentinel_kwargs={"password": ...}``. Connecting may
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
            ping_interval: See the class.
            min_replicas: See the class.
            replica_timeout: See the class.
            failover_timeout: See the class; ``None``: 30 s for a ``redis+sentinel://`` URL,
                0 otherwise.
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
        sentinel: Any = None
        try:
            if _is_sentinel_url(url):
                followed = _parse_sentinel_url(url)
                where = followed.where
                client, sentinel = followed.client(client_options)
            else:
                where = _where_from_url(url)
                client = aioredis.from_url(url, **client_options)
            # Build one connection object (no I/O) so that an option redis-py does not know
            # fails here, not as a TypeError at the first command.
            pool = client.connection_pool
            pool.connection_class(**pool.connection_kwargs)
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            # The parser's message may quote the URL, password included.
            problem = "one of its query options has a bad value (db, socket or ssl options)"
            raise _bad_url(problem) from None
        except TypeError as exc:
            raise _unknown_option(exc) from None
        store = cls(
            client,
            name=name,
            encryption_key=encryption_key,
            prefix=prefix,
            lock_ttl=lock_ttl,
            lock_timeout=lock_timeout,
            command_timeout=command_timeout,
            ping_interval=ping_interval,
            min_replicas=min_replicas,
            replica_timeout=replica_timeout,
            failover_timeout=(
                failover_timeout
                if failover_timeout is not None
                else _SENTINEL_FAILOVER_TIMEOUT
                if sentinel is not None
                else 0.0
            ),
            owns_client=True,
            where=where,
        )
        store._sentinel = sentinel
        return store

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
        """Stop listening for changes and close the client if this store created it.

        Raises:
            ConfigError: The store was first used on another event loop.
        """
        self._check_loop()
        self._callbacks.clear()
        self._closing.set()
        await self._stop_listener()
        if self._background:
            # Lock releases left by callers that failed or were cancelled while taking the
            # lock: each makes one last attempt now (the lock's TTL frees it if that fails).
            _, pending = await asyncio.wait(set(self._background), timeout=_STOP_WAIT)
            for task in pending:
                task.cancel()
        if self.owns_client:
            await self.client.aclose()
            if self._sentinel is not None:
                await self._sentinel.aclose()

    def _check_loop(self) -> None:
        # The client's connections, and the store's events and tasks, belong to the loop that
        # first used them; from another loop they fail deep inside redis-py ("attached to a
        # different loop", "Event loop is closed") or hang.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not called from a coroutine: nothing loop-bound is touched
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            msg = (
                "This RedisAuthStore was first used on another event loop. A store (and its "
                "Redis client) belongs to one event loop: make one store per loop; they share "
                "the login through Redis."
            )
            raise ConfigError(msg)

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
            isinstance(exc, rex.ResponseError)
            and any(mark in str(exc) for mark in ("NOPERM", "NOAUTH", "no permissions to run"))
        ):
            # ("no permissions to run": a command that a script runs, such as TIME, which the
            # user's ACL may lack since it was written for an older release.)
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

    async def _call(
        self, what: str, command: Callable[[], Awaitable[Any]], *, extra: float = 0.0
    ) -> Any:  # noqa: ANN401 -- Redis replies
        """Send ``command()``; while a failover lasts (``failover_timeout``), send it again.

        Every command of the store may run twice (writes are compare-and-swap, the lock
        scripts know their owner), so one that got no answer is safe to send again.
        """
        import redis.exceptions as rex  # noqa: PLC0415 -- optional extra

        self._check_loop()
        deadline = time.monotonic() + self.failover_timeout
        delay = _FAILOVER_BACKOFF_FIRST
        while True:
            try:
                return await self._once(what, command, extra)
            except (rex.RedisError, OSError) as exc:
                error = self._error(what, exc)
                if not _in_failover(exc) or time.monotonic() + delay > deadline:
                    raise error from None
                logger.info("%s; trying again (a failover?)", error)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()
            if self._closing.is_set():
                raise error from None
            delay = min(delay * 2, _FAILOVER_BACKOFF_MAX)

    async def _once(self, what: str, command: Callable[[], Awaitable[Any]], extra: float) -> Any:  # noqa: ANN401 -- Redis replies
        limit = None if self.command_timeout is None else self.command_timeout + extra
        try:
            async with asyncio.timeout(limit):
                return await command()
        except UnicodeDecodeError:
            # A client made with decode_responses=True met bytes that are not UTF-8 in a
            # reply; the error holds the reply, so it is never chained.
            msg = (
                f"{what}: Redis at {self.where} answered with bytes that are not UTF-8 text: "
                f"the login in key {self.key} is corrupt or was not written by aioscopedauth "
                "(it is left as it is). Log in again, or save a good login over it."
            )
            raise StorageError(msg) from None

    async def _script(self, what: str, script: str, keys: list[str], args: list[Any]) -> Any:  # noqa: ANN401 -- Redis replies
        return await self._call(what, lambda: self._eval(script, keys, args))

    def _replicas_needed(self, connected: object) -> int:
        """How many replicas must acknowledge a write, given how many the primary has."""
        if self.min_replicas is not None:
            return self.min_replicas
        try:
            return 1 if int(_text(connected)) > 0 else 0
        except ValueError:
            return 0

    def _one_connection(self) -> redis.asyncio.Redis:
        """A client of the same pool that sends everything on one connection."""
        try:
            return self.client.client()
        except TypeError:
            # A subclass whose constructor takes other arguments: its own client, then (a
            # WAIT may then count another connection's writes; redis-py's own class never
            # gets here).
            return self.client

    async def _confirmed_script(
        self,
        what: str,
        script: str,
        keys: list[str],
        args: list[Any],
        written: Callable[[Any], object],
    ) -> tuple[Any, str | None]:
        """Run a script that writes, then wait until enough replicas hold it (``WAIT``).

        ``written(reply)`` gives the replicas the script found connected, or ``None`` when it
        wrote nothing. ``WAIT`` counts what the replicas acknowledged of the writes sent on
        *its own connection*, so the script and ``WAIT`` go on one connection of the pool.

        Returns:
            The script's reply, and what to raise (a :class:`StorageError`'s message) when
            fewer replicas than needed acknowledged within ``replica_timeout``: the write
            stands on the primary but does not count as saved. ``None`` when it counts.
        """
        timeout_ms = max(1, int(self.replica_timeout * 1000))

        async def run() -> tuple[Any, int, int]:
            connection = self._one_connection()
            try:
                reply = await self._eval(script, keys, args, connection)
                connected = written(reply)
                needed = 0 if connected is None else self._replicas_needed(connected)
                if not needed:
                    return reply, 0, 0
                acked = await connection.execute_command("WAIT", needed, timeout_ms)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                return reply, needed, int(_text(acked))
            finally:
                # Hands the connection back to the pool (the pool itself stays open).
                await connection.aclose(close_connection_pool=False)

        reply, needed, got = await self._call(what, run, extra=self.replica_timeout)
        if got >= needed:
            return reply, None
        return reply, (
            f"{what}: Redis at {self.where} wrote it, but {got} of the {needed} replica(s) "
            f"needed acknowledged it within {self.replica_timeout:g} s, so a failover now "
            "could lose it: it counts as not saved and is written again on the next try. "
            "Check the replicas' links, or lower min_replicas."
        )

    async def _eval(
        self,
        script: str,
        keys: list[str],
        args: list[Any],
        client: redis.asyncio.Redis | None = None,
    ) -> Any:  # noqa: ANN401 -- Redis replies
        import redis.exceptions as rex  # noqa: PLC0415 -- optional extra

        client = self.client if client is None else client
        sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        try:
            return await client.evalsha(sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            # A restarted server forgot its scripts; EVAL runs it and caches it again.
            return await client.eval(script, len(keys), *keys, *args)

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
        raw = await self._call("Could not read the login", lambda: self.client.hgetall(self.key))
        if not raw:
            return None
        try:
            fields = {_text(k): _text(v) for k, v in raw.items()}
        except UnicodeDecodeError:
            # The error holds the bytes (a token, perhaps): never chained.
            msg = (
                f"The login in Redis key {self.key} at {self.where} holds bytes that are not "
                "UTF-8 text: it is corrupt or was not written by aioscopedauth (it is left as "
                "it is). Log in again, or save a good login over it."
            )
            raise StorageError(msg) from None
        try:
            version = int(fields["version"])
        except (KeyError, ValueError):
            msg = (
                f"Redis key {self.key} at {self.where} holds no version: it was not written by "
                "aioscopedauth. Delete it or choose another name."
            )
            raise StorageError(msg) from None
        return _Entry(version, _stamp_of(fields.get("at")), self._open(fields))

    async def _read(self) -> _Entry | None:
        """Read the login; put back the remembered one when the server lost it."""
        for _ in range(_MAX_ATTEMPTS):
            entry = await self._read_raw()
            seen = self._seen
            if seen is None or (entry is not None and entry.stamp >= seen.stamp):
                if entry is not None:
                    self._seen = entry
                return entry
            if seen.data is None and entry is None:
                return None  # logged out, and the marker was lost with the rest: still out
            # The server holds nothing, or a login written before the one this host saw: it
            # restarted without persistence or came back from an old dump. Put the newest
            # login back (only where nothing newer was written meanwhile, in time: a login
            # saved after the restart wins, whatever its version) instead of logging out.
            found = "nothing" if entry is None else f"version {entry.version}"
            logger.warning(
                "Redis at %s holds %s for %s, older than version %d seen here (restarted or "
                "restored?); writing it back",
                self.where,
                found,
                self.key,
                seen.version,
            )
            await self._write("restore", None, seen.version, seen.data, at=seen.at)
        msg = f"Could not read the login at {self.where}: it kept changing. Retry."
        raise StorageError(msg)

    async def _write(
        self, mode: str, expected: int | None, version: int, data: AuthDotJson | None, *, at: int
    ) -> bool:
        field, value = ("", "") if data is None else self._seal(data)
        self._seq += 1
        reply, unconfirmed = await self._confirmed_script(
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
                str(at),
            ],
            # A restore puts back what some host saw already: a read is no place to fail.
            lambda reply: reply[3] if mode == "cas" and int(reply[0]) == 1 else None,
        )
        written = int(reply[0]) == 1
        if written:
            entry = _Entry(version, _stamp_of(reply[2]), data)
            self._seen = entry
            if mode == "cas":
                self._unconfirmed = None if unconfirmed is None else entry.stamp
        if unconfirmed is not None:
            raise StorageError(unconfirmed)
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
                (nothing is written); or fewer replicas than ``min_replicas`` acknowledged the
                write in time (it stands on the primary, and the next update that finds it
                there writes it again).
        """
        for _ in range(_MAX_ATTEMPTS):
            entry = await self._read()
            before = None if entry is None else entry.data
            after = change(before)
            if after is before or (after is None and entry is not None and before is None):
                if entry is None or entry.stamp != self._unconfirmed:
                    return CommitResult(before, before, written=False)
                # What is stored is this store's own write that no replica acknowledged: it
                # is not saved until one does. Write it again, and wait again.
                logger.info("Writing %s again: no replica acknowledged it yet", self.key)
                after = before
            current = 0 if entry is None else entry.version
            seen = self._seen
            floor = 0 if seen is None else seen.version
            expected = None if entry is None else entry.version
            # The new login's "at" is later than any this host has seen (the server's clock
            # after a restart cannot put it behind a login this host remembers).
            at = 0 if seen is None else seen.at
            if await self._write("cas", expected, max(current, floor) + 1, after, at=at):
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

    async def move_login_from(self, source: AuthStore, *, replace: bool = False) -> bool:
        """Move the login of ``source`` (a machine's ``auth.json``, say) here, and log it out there.

        A copy would leave two live holders of one single-use refresh token: the machine's
        Codex (or this library on it) and the fleet would each spend it in turn, and the
        second spend is refused as reused, which logs the login out everywhere. So the
        source is logged out once the login is here; its Codex then says it is not logged in
        (a later ``codex login`` there makes a new, separate login).

        Under the fleet's refresh lock and the source's own: read the source; save its login
        here; log the source out only if it still holds that login (compare-and-delete; a
        file store does it under Codex's locks). Should the source have changed in between
        (Codex refreshed there), the newer login replaces the copy and the source is logged
        out then. Running it again after a failure finishes the move.

        Args:
            source: The store to take the login from (a :class:`~aioscopedauth.FileAuthStore`
                of a logged-in machine, typically).
            replace: Replace a different login this store already holds (the fleet's); by
                default that is refused, and nothing is moved.

        Returns:
            ``True`` when a login was moved, ``False`` when ``source`` holds none.

        Raises:
            StorageError: This store holds another login and ``replace`` is false (nothing
                changed), or a store failed (the source keeps its login unless the message
                says otherwise).
        """
        if await source.load() is None:
            return False
        async with self.lock(), source.lock():
            copied: AuthDotJson | None = None
            for _ in range(_MAX_ATTEMPTS):
                login = await source.load()
                if login is None:
                    return copied is not None  # logged out there meanwhile
                await self._take_in(login, copied, replace=replace)
                copied = login
                gone = await source.update(_remove_if(login))
                if gone.after is None:
                    return True
                logger.info("The login at the source changed while it was moved; moving again")
        msg = (
            f"Could not move the login to {self.key} at {self.where}: its source kept "
            "changing. The source may still hold it: run the move again."
        )
        raise StorageError(msg)

    async def _take_in(
        self, login: AuthDotJson, copied: AuthDotJson | None, *, replace: bool
    ) -> None:
        def put(current: AuthDotJson | None) -> AuthDotJson | None:
            if current is None or replace or current in (login, copied):
                return login
            return current

        result = await self.update(put)
        if result.after != login:
            msg = (
                f"Redis key {self.key} at {self.where} already holds another login: nothing "
                "was moved. Pass replace=True to replace it with this one, or choose another "
                "name."
            )
            raise StorageError(msg)

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
            await asyncio.shield(self._in_background(self._release(owner, ttl_ms, renewer)))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name="aioscopedauth-redis-unlock")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _lock_keys(self, owner: str) -> list[str]:
        """The lock, and the mark that says ``owner`` gave up taking it."""
        return [self.lock_key, f"{self.lock_key}:void:{owner}"]

    async def _acquire(self, owner: str, ttl_ms: int) -> None:
        self._check_loop()
        deadline = time.monotonic() + self.lock_timeout
        delay = _LOCK_POLL_FIRST
        while True:
            attempt = asyncio.get_running_loop().create_task(
                self._confirmed_script(
                    "Could not take the refresh lock",
                    _ACQUIRE_SCRIPT,
                    self._lock_keys(owner),
                    [owner, ttl_ms],
                    _taken_on,
                )
            )
            try:
                reply, unconfirmed = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                # The server may set the lock after the caller is gone: free it then.
                self._in_background(self._release_after(attempt, owner, ttl_ms))
                raise
            except StorageError:
                # No answer in time, or the connection broke after the request was sent: the
                # server may have set the lock all the same (and may yet, if the request is
                # still on its way). Give it up now, not after its TTL.
                self._in_background(self._abandon(owner, ttl_ms))
                raise
            if unconfirmed is not None:
                # A lock no replica holds can vanish in a failover, and a second host then
                # spend the same refresh token: give it up, as for a lost answer.
                self._in_background(self._abandon(owner, ttl_ms))
                raise StorageError(unconfirmed)
            if int(reply[0]):
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

    async def _release_after(self, attempt: asyncio.Task[Any], owner: str, ttl_ms: int) -> None:
        await asyncio.wait({attempt})
        if (
            not attempt.cancelled()
            and attempt.exception() is None
            and not int(attempt.result()[0][0])
        ):
            return  # not taken: nothing to free
        await self._abandon(owner, ttl_ms)

    async def _abandon(self, owner: str, ttl_ms: int) -> None:
        """Free the lock if ``owner`` holds it, and void a take still on its way."""
        await self._unlock("Could not give up the refresh lock", _ABANDON_SCRIPT, owner, ttl_ms)

    async def _unlock(self, what: str, script: str, owner: str, ttl_ms: int) -> None:
        """Run a releasing script, again after a failure, until the lock would expire anyway.

        A release that got no answer may not have run: one left undone blocks every host's
        refresh for the rest of the TTL.
        """
        deadline = time.monotonic() + ttl_ms / 1000
        delay = _LOCK_POLL_MAX
        last = False
        while True:
            try:
                # Waits for a replica too: a release that reached only a primary that died
                # would leave the lock on the promoted replica for its TTL, stalling the
                # fleet. Not acknowledged, it is sent again (to the new primary, then).
                _, unconfirmed = await self._confirmed_script(
                    what, script, self._lock_keys(owner), [owner, ttl_ms], _replicas_of
                )
                if unconfirmed is not None:
                    raise StorageError(unconfirmed)  # noqa: TRY301 -- retried like a lost answer
            except StorageError as exc:
                if last or time.monotonic() + delay >= deadline:
                    logger.warning("%s; it expires by itself after its TTL", exc)
                    return
                logger.info("%s; trying again", exc)
            else:
                return
            # Closing the store cuts the wait short: one last attempt, not a minute of them.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()
            last = self._closing.is_set()
            delay = min(delay * 2, _LISTEN_BACKOFF_MAX)

    async def _release(self, owner: str, ttl_ms: int, renewer: asyncio.Task[None]) -> None:
        # It sees the stop flag within one command (bounded by command_timeout).
        limit = None if self.command_timeout is None else self.command_timeout + 1
        await asyncio.wait({renewer}, timeout=limit)
        if not renewer.done():
            renewer.cancel()  # a client without timeouts: renewing now is harmless
        await self._unlock("Could not release the refresh lock", _RELEASE_SCRIPT, owner, ttl_ms)

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

        Raises:
            ConfigError: The store was first used on another event loop.
        """
        self._check_loop()
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
        clock = asyncio.get_running_loop().time
        # How long an answer may take: a subscription's confirmation, a PING's pong.
        answer_within = self.ping_interval if self.command_timeout is None else self.command_timeout
        while not stopping.is_set():
            pubsub = self.client.pubsub()
            try:
                async with asyncio.timeout(self.command_timeout):
                    await pubsub.subscribe(self.channel)
                # Wait for the confirmation: only then are later notices sure to arrive.
                asked = clock()
                while await pubsub.get_message(timeout=_LISTEN_POLL) is None:
                    if stopping.is_set():
                        return
                    if clock() - asked > answer_within:
                        msg = f"no answer to SUBSCRIBE within {answer_within:g} s"
                        raise rex.TimeoutError(msg)
                self.listening.set()
                if failing:
                    logger.info("Listening for login changes at %s again", self.where)
                failing = False
                delay = _LISTEN_BACKOFF_FIRST
                self._fire()  # notices sent before (or while reconnecting) were missed
                await self._receive(pubsub, stopping, answer_within)
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

    async def _receive(
        self, pubsub: redis.asyncio.client.PubSub, stopping: asyncio.Event, answer_within: float
    ) -> None:
        """Hand notices on until told to stop; raise when the connection turns out dead.

        A connection can die without a FIN or an RST (a NAT or a firewall forgets the flow):
        then nothing ever arrives and nothing fails. So after ``ping_interval`` of silence it
        sends a PING, and no answer within ``answer_within`` means the connection is gone.
        """
        import redis.exceptions as rex  # noqa: PLC0415 -- optional extra

        clock = asyncio.get_running_loop().time
        heard = clock()
        pinged: float | None = None
        while not stopping.is_set():
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=min(_LISTEN_POLL, self.ping_interval)
            )
            now = clock()
            if message is not None:
                heard, pinged = now, None  # anything at all shows the connection is alive
                if message.get("type") == "message":
                    self._notice(message.get("data"))
            elif pinged is not None:
                if now - pinged > answer_within:
                    msg = f"no answer to PING within {answer_within:g} s"
                    raise rex.TimeoutError(msg)
            elif now - heard >= self.ping_interval:
                async with asyncio.timeout(self.command_timeout):
                    await pubsub.ping()
                pinged = now

    def _notice(self, data: object) -> None:
        try:
            notice = json.loads(_text(data))
            version = int(notice["version"])
            writer = str(notice["writer"])
            at = _stamp_of(notice.get("at", 0))
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.debug("Ignoring a malformed notice on %s", self.channel)
            return
        if writer.split(".", 1)[0] == self._writer:
            return  # our own write
        seen = self._seen
        if seen is not None and (at, version) <= seen.stamp:
            return  # already read (a login written later, even with a lower version, is not)
        self.notices += 1
        self._fire()
