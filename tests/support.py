"""Helpers shared by the tests: canary secrets and real keyring backends."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import keyring.backend
import keyring.errors

from aioscopedauth import AuthDotJson, FileAuthStore, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from aioscopedauth import CommitResult

CANARY_API_KEY = "sk-CANARY-apikey-7f3e9d1c"
CANARY_ACCESS = "CANARY-access-5b2a8e4f"
CANARY_REFRESH = "CANARY-refresh-9c1d3b7a"


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A real keyring backend that keeps entries in a dict (registered per test)."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # keyring's base is untyped
        self.entries: dict[tuple[str, str], str] = {}
        self.calls: list[str] = []

    def get_password(self, service: str, username: str) -> str | None:
        self.calls.append("get")
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.calls.append("set")
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.calls.append("delete")
        if (service, username) not in self.entries:
            raise keyring.errors.PasswordDeleteError(username)
        del self.entries[(service, username)]


class BrokenKeyring(keyring.backend.KeyringBackend):
    """A real backend whose every call fails, as a locked or missing keyring daemon does."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # keyring's base is untyped

    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.KeyringError("the keyring daemon is not running")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError("the keyring daemon is not running")

    def delete_password(self, service: str, username: str) -> None:
        raise keyring.errors.PasswordDeleteError("the keyring daemon is not running")


class HangingKeyring(keyring.backend.KeyringBackend):
    """A real backend that blocks until released, as a keyring waiting for an unlock prompt."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # keyring's base is untyped
        self.release = threading.Event()

    def get_password(self, service: str, username: str) -> str | None:
        self.release.wait(30)
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self.release.wait(30)

    def delete_password(self, service: str, username: str) -> None:
        self.release.wait(30)


CANARIES = (CANARY_API_KEY, CANARY_ACCESS, CANARY_REFRESH)


class GatedFileStore:
    """A real FileAuthStore whose next load (or save) does its I/O, then waits to be released.

    It lets a test hold one store read in flight while other work changes the auth; the
    reading and the writing are the real file store's.
    """

    def __init__(self, home: Path) -> None:
        self.inner = FileAuthStore(home)
        self.hold_next_load = False
        self.hold_next_save = False
        self.failing_saves = 0
        self.full_disk = False
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    @property
    def kind(self) -> str:
        return "file"

    async def load(self) -> AuthDotJson | None:
        data = await self.inner.load()
        if self.hold_next_load:
            self.hold_next_load = False
            self.holding.set()
            await self.release.wait()
        return data

    async def save(self, data: AuthDotJson) -> None:
        if self.failing_saves:
            # A full disk cannot be made in a test and root ignores file modes, so this one
            # failure is injected; every other save is the real file store's.
            self.failing_saves -= 1
            msg = f"Could not write {self.inner.path}: No space left on device."
            raise StorageError(msg, path=self.inner.path)
        await self.inner.save(data)
        if self.hold_next_save:
            self.hold_next_save = False
            self.holding.set()
            await self.release.wait()

    async def update(
        self, change: Callable[[AuthDotJson | None], AuthDotJson | None]
    ) -> CommitResult:
        if self.failing_saves:
            # The same injected full disk as save() (see there).
            self.failing_saves -= 1
            msg = f"Could not write {self.inner.path}: No space left on device."
            raise StorageError(msg, path=self.inner.path)
        if self.full_disk:
            # A full disk as the file store meets it: reads work, and a commit that writes
            # nothing (its compare-and-swap lost) succeeds; only a write fails.
            def refuse_writes(current: AuthDotJson | None) -> AuthDotJson | None:
                new = change(current)
                if new != current:
                    msg = f"Could not write {self.inner.path}: No space left on device."
                    raise StorageError(msg, path=self.inner.path)
                return new

            return await self.inner.update(refuse_writes)
        result = await self.inner.update(change)
        if self.hold_next_save:
            self.hold_next_save = False
            self.holding.set()
            await self.release.wait()
        return result

    async def delete(self) -> bool:
        return await self.inner.delete()

    def lock(self) -> AbstractAsyncContextManager[None]:
        return self.inner.lock()
