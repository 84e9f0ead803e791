from __future__ import annotations

import inspect
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
    "CommandBearerRefresher",
    "CommandError",
    "CommitResult",
    "ConfigError",
    "ExternalAuthTokens",
    "ExternalRefresher",
    "FileAuthStore",
    "FileBody",
    "IdTokenInfo",
    "KeyringAuthStore",
    "LoadedAuth",
    "LoginRestrictionError",
    "MemoryAuthStore",
    "OAuthConfig",
    "PlanType",
    "ProviderAuthCommand",
    "ProviderInfo",
    "RecoveryEvent",
    "RecoveryStep",
    "RefreshContext",
    "RefreshError",
    "RefreshFailureReason",
    "RefreshReason",
    "RefreshTokenFailedError",
    "StorageError",
    "TokenData",
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
        aioscopedauth.RefreshTokenFailedError,
        aioscopedauth.TransientRefreshError,
    ]
    for error in errors:
        assert issubclass(error, aioscopedauth.AuthError)
    assert issubclass(aioscopedauth.RefreshTokenFailedError, aioscopedauth.RefreshError)
    assert issubclass(aioscopedauth.TransientRefreshError, aioscopedauth.RefreshError)
    assert issubclass(aioscopedauth.ConfigError, ValueError)
    assert issubclass(aioscopedauth.AuthDataError, ValueError)
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


def test_docs_show_the_same_exception_tree() -> None:
    doc = inspect.getdoc(aioscopedauth._errors)
    assert doc is not None
    page = (Path(__file__).parent.parent / "docs" / "reference" / "errors-tree.md").read_text()
    tree_lines = [line.strip() for line in page.split("```text")[1].split("```")[0].splitlines()]
    doc_lines = [line.strip() for line in doc.splitlines()]
    for line in filter(None, tree_lines):
        assert line in doc_lines, f"docs/reference/errors-tree.md drifted: {line!r}"
