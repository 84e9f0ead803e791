"""Finishing a clean-up through cancellations, asyncio's one-shot kind and anyio's level-triggered.

A caller cancelled while something it must finish is under way (a worker thread writing
``auth.json``, a command being killed and reaped) waits for it, and only then lets the
cancellation through. Two kinds of cancellation reach that wait:

* ``Task.cancel()`` (asyncio, ``asyncio.timeout``): delivered once. The wait goes on, and the
  cancellation is remembered.
* an anyio cancel scope (``move_on_after``, ``fail_after``, a task group's): level-triggered.
  On the asyncio backend anyio cancels a task inside a cancelled scope again on every turn of
  the event loop until it leaves the scope, so a wait resumed after each cancellation would
  wake on every turn: a busy loop for as long as the clean-up takes. When anyio is loaded (the
  only way such a scope can exist, so asyncio-only programs never import it) the wait runs in
  a shielded anyio scope, which anyio leaves alone; its shield does not stop a
  ``Task.cancel()``, which the loop still outlasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

__all__ = ["outlast"]


def _quiet() -> AbstractContextManager[object]:
    """A shielded anyio scope when anyio is loaded, else nothing (see the module docstring)."""
    anyio = sys.modules.get("anyio")
    if anyio is None:
        return contextlib.nullcontext()
    scope: AbstractContextManager[object] = anyio.CancelScope(shield=True)
    return scope


async def outlast(work: asyncio.Future[Any]) -> asyncio.CancelledError | None:
    """Wait until ``work`` is done, whatever cancels the caller meanwhile.

    ``work`` itself is never cancelled, and its outcome is left for the caller to read.

    Args:
        work: A future or task that ends by itself (a worker thread's, a clean-up task).

    Returns:
        The first cancellation that reached the caller during the wait, for the caller to raise
        once ``work`` is dealt with (that very exception: anyio recognises its own by their
        message, and ``move_on_after`` would let a new one escape), or ``None``.
    """
    first: asyncio.CancelledError | None = None
    with _quiet():
        while not work.done():
            try:
                # asyncio.wait never cancels `work`, and does not raise its exception.
                await asyncio.wait((work,))
            except asyncio.CancelledError as exc:
                first = first or exc
    return first
