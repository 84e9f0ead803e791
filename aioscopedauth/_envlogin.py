"""Logins that live in the environment, never in ``auth.json``, read as Codex reads them.

Codex 0.169 and 0.171 (observed with the real binaries; ``docs/explanation/compatibility.md``,
"Logins from the environment") pick a login from the environment before anything stored:

1. Workload identity, selected as soon as ``OPENAI_FEDERATION_RULE_ID`` or
   ``OPENAI_IDENTITY_TOKEN_FILE`` is set (even blank; 0.171 also reads
   ``OPENAI_IDENTITY_TOKEN_SOURCE``): Codex exchanges the identity token at OpenAI's token
   endpoint for a short-lived ChatGPT token. A partial or invalid setup fails; it never falls
   back to another login. This library cannot make that exchange yet: it only says so.
2. ``CODEX_ACCESS_TOKEN`` (trimmed; blank is unset): an ``at-…`` value is a personal access
   token (its account from the whoami call); any other value is an agent identity token.
3. ``CODEX_API_KEY`` / ``OPENAI_API_KEY`` (the ``api_key_env`` option), then ``auth.json``.

The functions here are pure: they take the environment as a mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

from ._model import PAT_FIELD, AuthDotJson, AuthMode

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ACCESS_TOKEN_ENV",
    "PAT_PREFIX",
    "WORKLOAD_IDENTITY_ENV",
    "EnvIdentity",
    "access_token_login",
    "codex_env_identity",
    "env_value",
    "workload_identity_variables",
]

ACCESS_TOKEN_ENV = "CODEX_ACCESS_TOKEN"  # noqa: S105 -- a variable's name, not a secret
"""The variable Codex reads an access token from."""
PAT_PREFIX = "at-"
"""How a personal access token begins; Codex reads any other access token as an agent identity."""
WORKLOAD_IDENTITY_ENV = (
    "OPENAI_FEDERATION_RULE_ID",
    "OPENAI_IDENTITY_TOKEN_FILE",
    "OPENAI_IDENTITY_TOKEN_SOURCE",
)
"""The variables whose presence makes Codex log in with workload identity."""


def env_value(environ: Mapping[str, str], name: str | None) -> str | None:
    """The trimmed value of ``name`` in ``environ``, or ``None`` when unset, blank or unnamed."""
    if not name:
        return None
    value = environ.get(name, "").strip()
    return value or None


def workload_identity_variables(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The workload identity variables set in ``environ`` (set at all: blank counts too)."""
    return tuple(name for name in WORKLOAD_IDENTITY_ENV if name in environ)


def access_token_login(token: str) -> AuthDotJson:
    """The payload an access token from the environment stands for (never saved anywhere).

    Args:
        token: The trimmed, non-blank value.

    Returns:
        A personal access token login for an ``at-…`` token, else an agent identity login
        (a mode this library cannot send with: :meth:`~aioscopedauth.AuthManager.auth` says so).
    """
    if token.startswith(PAT_PREFIX):
        # The shape `codex login --with-access-token` writes, so it reads like a stored one.
        return AuthDotJson(extra={"OPENAI_API_KEY": None, PAT_FIELD: token})
    return AuthDotJson(auth_mode=AuthMode.AGENT_IDENTITY, extra={"agent_identity": token})


@attrs.frozen
class EnvIdentity:
    """The login Codex would pick from the environment (no secret in it).

    Attributes:
        kind: ``workload_identity``, ``personal_access_token`` or ``agent_identity``.
        variables: The variables it comes from, as set.
        supported: Whether this library can log in with it.
    """

    kind: Literal["workload_identity", "personal_access_token", "agent_identity"]
    variables: tuple[str, ...]
    supported: bool

    def describe(self) -> str:
        """In words, with the variables: ``workload identity (OPENAI_FEDERATION_RULE_ID)``."""
        words = self.kind.replace("_", " ")
        return f"{words} ({', '.join(self.variables)})"


def codex_env_identity(
    environ: Mapping[str, str], *, access_token_env: str = ACCESS_TOKEN_ENV
) -> EnvIdentity | None:
    """The login Codex would take from ``environ`` before any stored one, or ``None``.

    Args:
        environ: The environment (``os.environ``).
        access_token_env: Where the access token is read from.

    Returns:
        Workload identity when one of its variables is set (it wins over everything, and this
        library cannot exchange it); else the access token's login; else ``None``.
    """
    variables = workload_identity_variables(environ)
    if variables:
        return EnvIdentity("workload_identity", variables, supported=False)
    token = env_value(environ, access_token_env)
    if token is None:
        return None
    if token.startswith(PAT_PREFIX):
        return EnvIdentity("personal_access_token", (access_token_env,), supported=True)
    return EnvIdentity("agent_identity", (access_token_env,), supported=False)
