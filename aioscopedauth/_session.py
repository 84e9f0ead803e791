"""The HTTP session a manager family uses for the token endpoint: owned, or borrowed."""

from __future__ import annotations

import aiohttp
import attrs

__all__ = ["SessionHolder"]


@attrs.define(eq=False)
class SessionHolder:
    """Hands out the token endpoint's session, creating it on first use when none was given.

    A session the user passed in is borrowed: used, never closed. One made here is owned: made
    again if it was closed, and closed by :meth:`aclose`.
    """

    http: aiohttp.ClientSession | None
    owns: bool

    @classmethod
    def of(cls, http: aiohttp.ClientSession | None) -> SessionHolder:
        """Borrow ``http``, or own the session made on first use when it is ``None``."""
        return cls(http, owns=http is None)

    def get(self) -> aiohttp.ClientSession:
        """Return the session (made now if needed)."""
        if self.http is None or (self.owns and self.http.closed):
            self.http = aiohttp.ClientSession()
            self.owns = True
        return self.http

    async def aclose(self) -> None:
        """Close the session if it is owned; a borrowed one is left to its owner."""
        if self.owns and self.http is not None:
            http, self.http = self.http, None
            await http.close()
