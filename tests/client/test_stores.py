"""Token stores: the memory store, and the file store's promises (0600, atomic replace,
fsync of the file and of its directory, nothing left behind when a save fails)."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from tokend.client import FileTokenStore, MemoryTokenStore, TokenResponse, TokenStore


def token(n: int) -> TokenResponse:
    return TokenResponse.from_response(
        {
            "access_token": f"access-{n}-" + "x" * 2000,  # big enough for a torn write to show
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": f"tkd_rt_{n}",
            "scope": "openid offline",
        },
        sent_at=1000.0 + n,
    )


def test_memory_store() -> None:
    store = MemoryTokenStore()
    assert isinstance(store, TokenStore)
    assert store.load() is None
    store.save(token(1))
    assert store.load() == token(1)


def test_file_store_round_trip_and_missing_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = FileTokenStore(tmp_path / "token.json")
    assert isinstance(store, TokenStore)
    assert store.load() is None
    store.save(token(1))
    store.save(token(2))
    assert store.load() == token(2)
    assert FileTokenStore(str(tmp_path / "token.json")).load() == token(2)
    assert os.listdir(tmp_path) == ["token.json"]


def test_file_store_is_owner_only_whatever_the_umask(tmp_path) -> None:  # type: ignore[no-untyped-def]
    old = os.umask(0)
    try:
        FileTokenStore(tmp_path / "token.json").save(token(1))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "token.json").stat().st_mode) == 0o600


def test_file_store_fsyncs_file_before_rename_and_directory_after(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:  # type: ignore[no-untyped-def]
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    FileTokenStore(tmp_path / "token.json").save(token(1))
    assert events == ["fsync file", "replace", "fsync dir"]


def test_failed_save_keeps_the_old_token_and_leaves_no_temp_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store = FileTokenStore(tmp_path / "token.json")
    store.save(token(1))

    def full_disk(src, dst) -> None:  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.save(token(2))
    monkeypatch.undo()
    assert store.load() == token(1)
    assert os.listdir(tmp_path) == ["token.json"]


def test_readers_never_see_a_partial_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Writers replace the file as fast as they can while a reader loads it: every load is a
    whole token (an in-place write would show empty or torn JSON here)."""
    store = FileTokenStore(tmp_path / "token.json")
    store.save(token(0))
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(start: int) -> None:
        n = start
        while not stop.is_set():
            store.save(token(n))
            n += 2

    writers = [threading.Thread(target=write, args=(i,)) for i in (1, 2)]
    for w in writers:
        w.start()
    try:
        for _ in range(1500):
            try:
                loaded = store.load()
                assert loaded is not None and loaded.access_token.endswith("x" * 2000)
            except BaseException as exc:
                errors.append(exc)
                break
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert errors == []
