"""aioscopedauth: asyncio-native credentials for API clients.

It loads and persists Codex-compatible auth state, refreshes OAuth tokens once however many
tasks and processes need them, mints bearer tokens with a command, and recovers from every 401
inside an aiohttp client middleware. See the documentation for the tour.
"""

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
)
from ._jwt import IdTokenInfo, PlanType, decode_jwt_payload, jwt_expiration
from ._model import Auth, AuthDotJson, AuthMode, TokenData
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
    "Auth",
    "AuthDataError",
    "AuthDotJson",
    "AuthError",
    "AuthMode",
    "AuthStore",
    "AutoAuthStore",
    "CommandError",
    "ConfigError",
    "FileAuthStore",
    "IdTokenInfo",
    "KeyringAuthStore",
    "LoadedAuth",
    "LoginRestrictionError",
    "MemoryAuthStore",
    "PlanType",
    "RefreshError",
    "RefreshFailureReason",
    "RefreshTokenFailedError",
    "StorageError",
    "TokenData",
    "TransientRefreshError",
    "__version__",
    "decode_jwt_payload",
    "jwt_expiration",
    "load_auth_data",
    "store_key",
]
