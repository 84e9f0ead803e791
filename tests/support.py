"""Helpers shared by the tests: canary secrets and real keyring backends."""

from __future__ import annotations

import threading

import keyring.backend
import keyring.errors

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
