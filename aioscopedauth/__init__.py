"""aioscopedauth: asyncio-native credentials for API clients.

It loads and persists Codex-compatible auth state, refreshes OAuth tokens once however many
tasks and processes need them, mints bearer tokens with a command, and recovers from every 401
inside an aiohttp client middleware. See the documentation for the tour.
"""

from ._body import FileBody
from ._command import CommandBearerRefresher, ProviderAuthCommand, parse_command_output
from ._commit import CommitResult
from ._config import ProviderInfo, load_providers, manager_for_provider
from ._errors import (
    AuthDataError,
    AuthError,
    CommandError,
    ConfigError,
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
from ._jwt import IdTokenInfo, PlanType, decode_jwt_payload, jwt_expiration
from ._manager import AuthChange, AuthChanges, AuthManager
from ._middleware import AuthMiddleware, RecoveryEvent
from ._model import AccountIdentity, Auth, AuthDotJson, AuthMode, TokenData
from ._oauth import OAuthConfig
from ._recovery import RecoveryStep, UnauthorizedRecovery
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
]
