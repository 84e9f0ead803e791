"""The 401 recovery's ports on ``AuthManager``: what :class:`~aioscopedauth.RecoveryTarget` asks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import TransientRefreshError

if TYPE_CHECKING:
    from ._bearer import BearerFlight
    from ._core import Core
    from ._external import ExternalRefresher
    from ._model import Auth

__all__ = ["RecoveryPorts"]


class RecoveryPorts:
    """``AuthManager``'s recovery steps and what they ask of the refreshes (a mixin)."""

    _core: Core
    _external: ExternalRefresher | None
    _bearer: BearerFlight | None

    def refreshed_since(self, auth: Auth | None, moment: float) -> bool:
        """Whether ``auth`` came from a token request this process sent at or after ``moment``.

        A 401 recovery asks this about the token its refresh step produced: a token requested
        before the 401 (a refresh already under way, which the step joined) may have been
        revoked with the rejected one, so its rejection says nothing about the login.

        Args:
            auth: A snapshot.
            moment: A ``time.monotonic()`` reading.

        Returns:
            ``False`` also when unknown (tokens another process saved, or an older refresh).
        """
        return self._core.refresh.refreshed_since(auth, moment)

    def bearer_refreshed_since(self, moment: float) -> bool:
        """Whether this manager's latest bearer token was asked for at or after ``moment``.

        The bearer twin of :meth:`refreshed_since`: the earliest start of a ``resolve()`` or
        ``refresh()`` call that returned the token (a lower bound of when it was minted).

        Args:
            moment: A ``time.monotonic()`` reading.

        Returns:
            ``False`` also when no bearer token was returned yet.
        """
        return self._bearer is not None and self._bearer.refreshed_since(moment)

    async def reload_if_account_matches(
        self, expected_account: str | None, rejected: Auth | None = None
    ) -> bool:
        """Adopt what the store holds now, if it is still the same account (recovery's reload).

        Concurrent calls share one read of the store.

        Args:
            expected_account: The account id of the rejected auth.
            rejected: The rejected auth, if known.

        Returns:
            Whether the auth to send now differs from the rejected one.

        Raises:
            RefreshTokenFailedError: The store holds another account, or nothing (logged out or
                signed in elsewhere): sign in again.
            StorageError: The store could not be read.
        """
        return await self._core.refresh.recovery_reload(expected_account, rejected)

    async def refresh_rejected(self, rejected: Auth | None = None) -> bool:
        """Refresh the managed login after a 401 (recovery's refresh_token step).

        Args:
            rejected: The rejected auth; if the manager already holds another one, it is
                adopted without calling the token endpoint.

        Returns:
            Whether the manager now holds other auth than the rejected one (``True`` on success).

        Raises:
            RefreshTokenFailedError: Refused for good, or a failure already recorded for it.
            TransientRefreshError: Try again later.
            StorageError: The store could not be read or written.
        """
        snapshot = rejected if rejected is not None else await self._core.current()
        if snapshot is None or not snapshot.mode.is_refreshable:
            return False
        return await self._core.refresh.join(snapshot, self._external)

    async def refresh_external_auth(self, rejected: Auth | None = None) -> bool:
        """Ask this manager's external source for a new token after a 401.

        For a bearer manager the new token lives in the source's cache only (nothing is
        persisted); for host-supplied ChatGPT tokens it is kept in the memory store.

        Args:
            rejected: The snapshot the server rejected, so concurrent 401s refresh once.

        Returns:
            Whether the auth changed (always ``True`` on success).

        Raises:
            TransientRefreshError: There is no external source, or it failed.
        """
        external = self._external
        if external is None:
            msg = "external auth is not configured"
            raise TransientRefreshError(msg)
        if self._bearer is not None:
            # Once per rejected token, however many requests saw it (see ``_bearer``).
            return await self._bearer.refresh(rejected)
        snapshot = rejected if rejected is not None else await self._core.current()
        if snapshot is None:
            msg = "there are no host-supplied tokens to refresh"
            raise TransientRefreshError(msg)
        return await self._core.refresh.join(snapshot, external)
