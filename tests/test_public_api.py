from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import aioscopedauth

# The contract of DESIGN.md that has landed so far, plus our additions. A name leaving this list
# is a breaking change; adding one is a deliberate act.
EXPECTED = {
    "AccountIdentity",
    "Auth",
    "AuthChange",
    "AuthChanges",
    "AuthDataError",
    "AuthDotJson",
    "AuthError",
    "AuthManager",
    "AuthMiddleware",
    "AuthMode",
    "AuthStore",
    "AutoAuthStore",
    "ChatgptMetadata",
    "ClientConfigError",
    "CommandBearerRefresher",
    "CommandError",
    "CommitResult",
    "ConfigError",
    "DeviceCode",
    "ExternalAuthTokens",
    "ExternalRefresher",
    "FileAuthStore",
    "FileBody",
    "IdTokenInfo",
    "KeyringAuthStore",
    "LoadedAuth",
    "LoginError",
    "LoginRestrictionError",
    "MemoryAuthStore",
    "OAuthConfig",
    "PlanType",
    "PrivateKeyJWT",
    "ProviderAuthCommand",
    "ProviderInfo",
    "ProviderLogin",
    "RecoveryEvent",
    "RecoveryStep",
    "RecoveryTarget",
    "RefreshContext",
    "RefreshError",
    "RefreshFailureReason",
    "RefreshReason",
    "RefreshTokenFailedError",
    "StorageError",
    "TokenData",
    "TokenExchangeSource",
    "TransientRefreshError",
    "UnauthorizedRecovery",
    "UnsupportedLoginError",
    "__version__",
    "decode_jwt_payload",
    "jwt_expiration",
    "load_auth_data",
    "load_providers",
    "manager_for_provider",
    "parse_command_output",
    "store_key",
}


def test_all_is_sorted_and_exact() -> None:
    assert aioscopedauth.__all__ == sorted(aioscopedauth.__all__)
    assert set(aioscopedauth.__all__) == EXPECTED


def test_every_public_name_resolves_lazily() -> None:
    # `import aioscopedauth` imports each name's module on first use (issue 13's fast start).
    for name in aioscopedauth.__all__:
        obj = getattr(aioscopedauth, name)
        assert obj is not None
        if name != "__version__":
            assert getattr(obj, "__module__", "").startswith("aioscopedauth."), name
    assert set(aioscopedauth.__all__) <= set(dir(aioscopedauth))
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchName'"):
        _ = aioscopedauth.NoSuchName


def test_every_public_name_is_documented() -> None:
    for name in aioscopedauth.__all__:
        obj = getattr(aioscopedauth, name)
        if name == "__version__":
            assert isinstance(obj, str)
            continue
        doc = inspect.getdoc(obj)
        assert doc, f"{name} has no docstring"
        assert doc.splitlines()[0].endswith("."), f"{name}: summary line must be a sentence"


def test_exception_tree() -> None:
    errors = [
        aioscopedauth.AuthDataError,
        aioscopedauth.StorageError,
        aioscopedauth.ConfigError,
        aioscopedauth.CommandError,
        aioscopedauth.LoginRestrictionError,
        aioscopedauth.UnsupportedLoginError,
        aioscopedauth.LoginError,
        aioscopedauth.RefreshTokenFailedError,
        aioscopedauth.ClientConfigError,
        aioscopedauth.TransientRefreshError,
    ]
    for error in errors:
        assert issubclass(error, aioscopedauth.AuthError)
    assert issubclass(aioscopedauth.RefreshTokenFailedError, aioscopedauth.RefreshError)
    assert issubclass(aioscopedauth.TransientRefreshError, aioscopedauth.RefreshError)
    assert issubclass(aioscopedauth.ConfigError, ValueError)
    assert issubclass(aioscopedauth.AuthDataError, ValueError)
    # Permanent like any refused refresh (cached, never retried) and a configuration problem.
    assert issubclass(aioscopedauth.ClientConfigError, aioscopedauth.RefreshTokenFailedError)
    assert issubclass(aioscopedauth.ClientConfigError, aioscopedauth.ConfigError)
    # The tree drawn in _errors' docstring names every class.
    tree = inspect.getdoc(aioscopedauth._errors)
    assert tree is not None
    for error in [*errors, aioscopedauth.RefreshError]:
        assert error.__name__ in tree


def test_refresh_errors_carry_reason_and_status() -> None:
    permanent = aioscopedauth.RefreshTokenFailedError(
        aioscopedauth.RefreshFailureReason.EXHAUSTED, "used"
    )
    assert permanent.reason is aioscopedauth.RefreshFailureReason.EXHAUSTED
    assert str(permanent) == "used"
    transient = aioscopedauth.TransientRefreshError("boom", status=503)
    assert transient.status == 503


def _tree_from_docstring(doc: str) -> list[tuple[int, str, str]]:
    found = []
    for line in doc.splitlines():
        match = re.match(r"^([\s│]*(?:[├└]── )?)(\w+Error)\s*(.*)$", line)
        if match and (match.group(1) or match.group(2) == "AuthError"):
            depth = match.start(2) // 4 - 1  # the block is indented by 4
            found.append((depth, match.group(2), match.group(3).strip()))
    return found


def _tree_from_page(page: str) -> list[tuple[int, str, str]]:
    items: list[list[str]] = []
    for line in page.splitlines():
        match = re.match(r"^(\s*)- `(\w+Error)`: (.*)$", line)
        if match:
            items.append([match.group(1), match.group(2), match.group(3)])
        elif items and line.startswith(" ") and line.strip():
            items[-1][2] += " " + line.strip()
    return [
        (len(indent) // 2, name, text.replace("`", "").removesuffix("."))
        for indent, name, text in items
    ]


def test_docs_show_the_same_exception_tree() -> None:
    doc = inspect.getdoc(aioscopedauth._errors)
    assert doc is not None
    page = (Path(__file__).parent.parent / "docs" / "reference" / "errors-tree.md").read_text()
    drawn = _tree_from_docstring(doc)
    listed = _tree_from_page(page)
    assert len(drawn) == 12
    # The page is a list (it fits a phone); the docstring draws the same tree.
    assert [(depth, name) for depth, name, _ in listed] == [(d, n) for d, n, _ in drawn]
    for (_, name, text), (_, _, described) in zip(listed[1:], drawn[1:], strict=True):
        assert text == described, f"docs/reference/errors-tree.md drifted at {name}"
