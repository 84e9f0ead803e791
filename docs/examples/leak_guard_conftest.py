"""A conftest.py that guards every test of a suite against leaked secrets."""

import pytest

from aioscopedauth.testing.plugin import LeakGuard


@pytest.fixture(autouse=True)
def leak_guard(auth_leak_guard: LeakGuard) -> LeakGuard:
    auth_leak_guard.plant("PLANTED-SECRET-123")  # any value that must never be logged
    return auth_leak_guard
