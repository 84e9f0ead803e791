"""A Codex-like writer: takes Codex CLI 0.169's locks on a shared home the way Codex does.

A standalone script (standard library only, no aioscopedauth import), run in its own process so
that it behaves like a foreign program on the same ``CODEX_HOME``. It reproduces what
``codex-0.169-interop.md`` observed with strace:

* every write (a refresh's save, an API-key login, a logout) takes ``auth.lock`` (created
  ``0666 & umask``, blocking ``flock(LOCK_EX)``, no timeout), reads ``auth.json``, takes
  ``auth.json.lock`` (created ``0600``, ``flock(LOCK_EX | LOCK_NB)`` retried every 10 ms, giving
  up after 5 s with "credential commit lock timed out" and exit code 3), reads ``auth.json``
  again, writes a temp file ``.auth-XXXXXX`` (``O_EXCL``, ``0600``) in the home, fsyncs it,
  renames it over ``auth.json`` and releases both locks;
* a refresh spends the refresh token (the POST) *before* taking any lock, then commits; like
  Codex 0.169, the commit keeps the stored file when its refresh token is no longer the one it
  spent (a logout, a new login or another writer's newer tokens win).

Usage::

    python codexlike.py --home HOME [--hold] refresh TOKEN_URL CLIENT_ID
    python codexlike.py --home HOME [--hold] login-api-key   # the key on stdin's first line
    python codexlike.py --home HOME [--hold] logout

``--hold`` prints ``locked`` once both locks are held, then waits for a line (or end of file) on
stdin before writing, so a test can order things deterministically. The last line on stdout is
one JSON object with the outcome; it never contains a secret. Exit codes: 0 done (written, or
the stored file kept), 1 the token endpoint refused or could not be reached, 3 the commit lock
timed out.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import string
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

AUTH_FILE = "auth.json"
AUTH_LOCK = "auth.lock"
COMMIT_LOCK = "auth.json.lock"
COMMIT_LOCK_TIMEOUT = 5.0
COMMIT_LOCK_POLL = 0.01
TIMED_OUT = "credential commit lock timed out"
EXIT_REFUSED = 1
EXIT_TIMED_OUT = 3


class CommitLockTimeoutError(Exception):
    """``auth.json.lock`` was not free within :data:`COMMIT_LOCK_TIMEOUT`."""


def emit(outcome: dict[str, Any]) -> None:
    """Print the outcome as one JSON line."""
    sys.stdout.write(json.dumps(outcome) + "\n")
    sys.stdout.flush()


def read_auth(home: Path) -> dict[str, Any] | None:
    """The stored ``auth.json`` object, or ``None`` when there is none."""
    try:
        raw = (home / AUTH_FILE).read_bytes()
    except FileNotFoundError:
        return None
    value = json.loads(raw)
    if not isinstance(value, dict):
        msg = "auth.json is not a JSON object"
        raise TypeError(msg)
    return value


def stored_refresh_token(data: dict[str, Any] | None) -> str | None:
    """The refresh token of a stored ChatGPT login, else ``None``."""
    tokens = None if data is None else data.get("tokens")
    token = tokens.get("refresh_token") if isinstance(tokens, dict) else None
    return token if isinstance(token, str) else None


@contextlib.contextmanager
def commit_locks(home: Path, *, hold: bool) -> Iterator[None]:
    """Take ``auth.lock`` (blocking) then ``auth.json.lock`` (polled, 5 s), as Codex 0.169 does.

    Raises:
        CommitLockTimeoutError: ``auth.json.lock`` stayed taken for 5 s.
    """
    outer = os.open(home / AUTH_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(outer, fcntl.LOCK_EX)
        read_auth(home)  # Codex reads auth.json between its two locks (and again after)
        inner = os.open(home / COMMIT_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + COMMIT_LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(inner, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise CommitLockTimeoutError(TIMED_OUT) from None
                    time.sleep(COMMIT_LOCK_POLL)
            try:
                if hold:
                    sys.stdout.write("locked\n")
                    sys.stdout.flush()
                    sys.stdin.readline()
                yield
            finally:
                fcntl.flock(inner, fcntl.LOCK_UN)
        finally:
            os.close(inner)
    finally:
        os.close(outer)


def write_auth(home: Path, data: dict[str, Any]) -> None:
    """Write ``auth.json`` as Codex does: ``.auth-XXXXXX`` (O_EXCL, 0600), fsync, rename."""
    payload = json.dumps(data, indent=2).encode()
    alphabet = string.ascii_letters + string.digits
    while True:
        temp = home / (".auth-" + "".join(secrets.choice(alphabet) for _ in range(6)))
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        break
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(home / AUTH_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def nanosecond_timestamp() -> str:
    """Now in UTC as Codex writes ``last_refresh``: ``2026-11-28T17:02:11.123456789Z``."""
    now = time.time_ns()
    seconds, nanos = divmod(now, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def post_refresh(token_url: str, client_id: str, refresh_token: str) -> tuple[int, Any]:
    """POST a forced refresh as Codex does; return the HTTP status and the decoded answer."""
    body = {
        "client_id": client_id,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "refresh_reason": "forced",
    }
    request = urllib.request.Request(  # noqa: S310 -- the test's own loopback URL
        token_url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    # No proxy: the token endpoint is on loopback, whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, None


def error_code(answer: Any) -> str | None:
    """The ``error.code`` (or ``error``) of a refused token request."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return code if isinstance(code, str) else None
    return error if isinstance(error, str) else None


def refreshed(stored: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The login Codex saves after a refresh (it drops unknown fields)."""
    old = stored.get("tokens")
    old_tokens = old if isinstance(old, dict) else {}
    tokens = {
        "id_token": answer.get("id_token", old_tokens.get("id_token")),
        "access_token": answer["access_token"],
        "refresh_token": answer.get("refresh_token", old_tokens.get("refresh_token")),
    }
    if "account_id" in old_tokens:
        tokens["account_id"] = old_tokens["account_id"]
    return {
        "auth_mode": stored.get("auth_mode", "chatgpt"),
        "OPENAI_API_KEY": stored.get("OPENAI_API_KEY"),
        "tokens": tokens,
        "last_refresh": nanosecond_timestamp(),
    }


def refresh(home: Path, token_url: str, client_id: str, *, hold: bool) -> int:
    """Spend the stored refresh token, then commit the answer under Codex's locks."""
    spent = stored_refresh_token(read_auth(home))
    if spent is None:
        emit({"spent": False, "status": None, "committed": False, "error": "not logged in"})
        return EXIT_REFUSED
    try:
        status, answer = post_refresh(token_url, client_id, spent)
    except OSError as exc:
        emit({"spent": False, "status": None, "committed": False, "error": type(exc).__name__})
        return EXIT_REFUSED
    if status != 200 or not isinstance(answer, dict) or "access_token" not in answer:
        emit({"spent": False, "status": status, "committed": False, "error": error_code(answer)})
        return EXIT_REFUSED
    outcome: dict[str, Any] = {"spent": True, "status": status, "committed": False}
    started = time.monotonic()
    try:
        with commit_locks(home, hold=hold):
            stored = read_auth(home)
            if stored is None or stored_refresh_token(stored) != spent:
                # Codex 0.169 keeps a logout, a new login or another writer's newer tokens.
                outcome["kept_other"] = True
                outcome["stored"] = "none" if stored is None else str(stored.get("auth_mode"))
            else:
                write_auth(home, refreshed(stored, answer))
                outcome["committed"] = True
                outcome["kept_other"] = False
    except CommitLockTimeoutError:
        sys.stderr.write(TIMED_OUT + "\n")
        emit(outcome | {"error": TIMED_OUT})
        return EXIT_TIMED_OUT
    outcome["commit_seconds"] = round(time.monotonic() - started, 3)
    emit(outcome)
    return 0


def login_api_key(home: Path, *, hold: bool) -> int:
    """Save ``{"auth_mode": "apikey", "OPENAI_API_KEY": key}`` (the key on stdin's first line)."""
    key = sys.stdin.readline().strip()
    try:
        with commit_locks(home, hold=hold):
            write_auth(home, {"auth_mode": "apikey", "OPENAI_API_KEY": key})
    except CommitLockTimeoutError:
        sys.stderr.write(TIMED_OUT + "\n")
        emit({"committed": False, "error": TIMED_OUT})
        return EXIT_TIMED_OUT
    emit({"committed": True})
    return 0


def logout(home: Path, *, hold: bool) -> int:
    """Remove ``auth.json`` under Codex's locks."""
    try:
        with commit_locks(home, hold=hold):
            try:
                (home / AUTH_FILE).unlink()
                removed = True
            except FileNotFoundError:
                removed = False
    except CommitLockTimeoutError:
        sys.stderr.write(TIMED_OUT + "\n")
        emit({"removed": False, "error": TIMED_OUT})
        return EXIT_TIMED_OUT
    emit({"removed": removed})
    return 0


def main(argv: list[str]) -> int:
    """Run one subcommand; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--home", type=Path, default=os.environ.get("CODEX_HOME"))
    parser.add_argument("--hold", action="store_true", help="wait for stdin once both locks held")
    commands = parser.add_subparsers(dest="command", required=True)
    refresh_command = commands.add_parser("refresh")
    refresh_command.add_argument("token_url")
    refresh_command.add_argument("client_id")
    commands.add_parser("login-api-key")
    commands.add_parser("logout")
    args = parser.parse_args(argv)
    if args.home is None:
        parser.error("--home (or CODEX_HOME) is required")
    home: Path = args.home
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if args.command == "refresh":
        return refresh(home, args.token_url, args.client_id, hold=args.hold)
    if args.command == "login-api-key":
        return login_api_key(home, hold=args.hold)
    return logout(home, hold=args.hold)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
