"""Regressions from the third outside review (issue 20) that live in the stores.

Items 2 (a failing keyring in ``auto`` mode), 3 (root saving a user's login), 8 (keyring
discovery on the event loop) and 13 (one stuck thread per hung keyring call).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from aioscopedauth import AuthDotJson, FileAuthStore

if TYPE_CHECKING:
    from pathlib import Path

NOBODY = 65534

only_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can save another user's login")


def _owners(home: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.lstat().st_uid, p.lstat().st_gid) for p in sorted(home.iterdir())}


# -- item 3: files root creates in a user's home are the user's ------------------------------


@only_root
async def test_root_saving_a_users_login_leaves_every_file_theirs(home: Path) -> None:
    home.mkdir(mode=0o700)
    os.chown(home, NOBODY, NOBODY)
    store = FileAuthStore(home)
    await store.save(AuthDotJson.for_api_key("sk-first"))
    theirs = (NOBODY, NOBODY)
    assert _owners(home) == {"auth.json": theirs, "auth.json.lock": theirs, "auth.lock": theirs}
    async with store.lock():
        pass
    assert _owners(home) == {
        "aioscopedauth-refresh.lock": theirs,
        "auth.json": theirs,
        "auth.json.lock": theirs,
        "auth.lock": theirs,
    }
    # update() takes the locks on its own fast path; it keeps them theirs too.
    await store.update(lambda _: AuthDotJson.for_api_key("sk-second"))
    assert set(_owners(home).values()) == {theirs}


@only_root
async def test_lock_files_root_left_behind_are_given_back(home: Path) -> None:
    home.mkdir(mode=0o700)
    for name in ("auth.lock", "auth.json.lock", "aioscopedauth-refresh.lock"):
        (home / name).touch(mode=0o600)
    os.chown(home, NOBODY, NOBODY)
    store = FileAuthStore(home)
    await store.save(AuthDotJson.for_api_key("sk-1"))
    async with store.lock():
        pass
    assert set(_owners(home).values()) == {(NOBODY, NOBODY)}


@only_root
async def test_root_creating_a_users_home_makes_it_theirs(tmp_path: Path) -> None:
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    os.chown(user_dir, NOBODY, NOBODY)
    home = user_dir / "deeper" / ".codex"
    await FileAuthStore(home).save(AuthDotJson.for_api_key("sk-1"))
    for folder in (user_dir / "deeper", home):
        assert (folder.stat().st_uid, folder.stat().st_gid) == (NOBODY, NOBODY)
    assert set(_owners(home).values()) == {(NOBODY, NOBODY)}


@only_root
async def test_root_never_gives_away_a_file_a_lock_name_points_at(
    home: Path, tmp_path: Path
) -> None:
    # A user who links auth.lock to a file of root's must not get that file from root.
    secret = tmp_path / "roots-file"
    secret.write_text("root's\n")
    linked = tmp_path / "hard-linked"
    linked.write_text("root's too\n")
    home.mkdir(mode=0o700)
    (home / "auth.lock").symlink_to(secret)
    os.link(linked, home / "auth.json.lock")
    os.chown(home, NOBODY, NOBODY)
    await FileAuthStore(home).save(AuthDotJson.for_api_key("sk-1"))
    assert (secret.stat().st_uid, linked.stat().st_uid) == (0, 0)
    assert (home / "auth.json").stat().st_uid == NOBODY
