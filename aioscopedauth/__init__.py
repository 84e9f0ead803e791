"""aioscopedauth: asyncio-native credentials for API clients.

It loads and persists Codex-compatible auth state, refreshes OAuth tokens once however many
tasks and processes need them, mints bearer tokens with a command, and recovers from every 401
inside an aiohttp client middleware. See the documentation for the tour.
"""

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs --version 10%
if TYPE_CHECKING:
    from ._body import FileBody
    from ._client_jwt import PrivateKeyJWT
    from ._command import CommandBearerRefresher, ProviderAuthCommand, parse_command_output
    from ._commit import CommitResult
    from ._config import ProviderInfo, load_providers, manager_for_provider
    from ._errors import (
        AuthDataError,
        AuthError,
        ClientConfigError,
        CommandError,
        ConfigError,
        LoginError,
        LoginRestrictionError,
        RefreshError,
        RefreshFailureReason,
        RefreshTokenFailedError,
        StorageError,
        TransientRefreshError,
        UnsupportedLoginError,
    )
    from ._external import (
        ChatgptMetadata,
        ExternalAuthTokens,
        ExternalRefresher,
        RefreshContext,
        RefreshReason,
    )
    from ._grants import DeviceCode
    from ._jwt import IdTokenInfo, PlanType, decode_jwt_payload, jwt_expiration
    from ._manager import AuthChange, AuthChanges, AuthManager
    from ._middleware import AuthMiddleware, RecoveryEvent
    from ._model import AccountIdentity, Auth, AuthDotJson, AuthMode, ProviderLogin, TokenData
    from ._oauth import OAuthConfig
    from ._recovery import RecoveryStep, RecoveryTarget, UnauthorizedRecovery
    from ._storage import (
        AuthStore,
        AutoAuthStore,
        FileAuthStore,
        KeyringAuthStore,
        LoadedAuth,
        MemoryAuthStore,
        load_auth_data,
        store_key,
    )
    from ._token_exchange import TokenExchangeSource

__version__ = "0.1.0.dev0"

__all__ = [
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
]

# Each public name is imported from its module on first use (PEP 562), so `import aioscopedauth`,
# the CLI's --version and --help, and the pytest plugin import neither aiohttp nor attrs until a
# name that needs them is used.
_LAZY: dict[str, str] = {
    "AccountIdentity": "_model",
    "Auth": "_model",
    "AuthChange": "_snapshot",
    "AuthChanges": "_snapshot",
    "AuthDataError": "_errors",
    "AuthDotJson": "_model",
    "AuthError": "_errors",
    "AuthManager": "_manager",
    "AuthMiddleware": "_middleware",
    "AuthMode": "_model",
    "AuthStore": "_storage",
    "AutoAuthStore": "_storage",
    "ChatgptMetadata": "_external",
    "ClientConfigError": "_errors",
    "CommandBearerRefresher": "_command",
    "CommandError": "_errors",
    "CommitResult": "_commit",
    "ConfigError": "_errors",
    "DeviceCode": "_grants",
    "ExternalAuthTokens": "_external",
    "ExternalRefresher": "_external",
    "FileAuthStore": "_storage",
    "FileBody": "_body",
    "IdTokenInfo": "_jwt",
    "KeyringAuthStore": "_storage",
    "LoadedAuth": "_storage",
    "LoginError": "_errors",
    "LoginRestrictionError": "_errors",
    "MemoryAuthStore": "_storage",
    "OAuthConfig": "_oauth",
    "PlanType": "_jwt",
    "PrivateKeyJWT": "_client_jwt",
    "ProviderAuthCommand": "_command",
    "ProviderInfo": "_config",
    "ProviderLogin": "_model",
    "RecoveryEvent": "_middleware",
    "RecoveryStep": "_recovery",
    "RecoveryTarget": "_recovery",
    "RefreshContext": "_external",
    "RefreshError": "_errors",
    "RefreshFailureReason": "_errors",
    "RefreshReason": "_external",
    "RefreshTokenFailedError": "_errors",
    "StorageError": "_errors",
    "TokenData": "_model",
    "TokenExchangeSource": "_token_exchange",
    "TransientRefreshError": "_errors",
    "UnauthorizedRecovery": "_recovery",
    "UnsupportedLoginError": "_errors",
    "decode_jwt_payload": "_jwt",
    "jwt_expiration": "_jwt",
    "load_auth_data": "_storage",
    "load_providers": "_config",
    "manager_for_provider": "_config",
    "parse_command_output": "_command",
    "store_key": "_storage",
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
