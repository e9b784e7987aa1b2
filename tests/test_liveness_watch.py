"""Watching another worker's liveness lock (issue 17): the ring, and on SQLite the lock
file's wait and test, which must never take a watcher for the worker it watches."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from pathlib import Path

import pytest

from support.storeapi import add, opened
from tenure.store import sqlite as sqlite_store
from tenure.store.liveness import FileLiveness, lock_file_free, wait_until_free, watched


def test_each_worker_watches_the_next_live_id_round_the_ring() -> None:
    live = ["a", "b", "c"]
    assert [watched(live, w) for w in live] == ["b", "c", "a"]
    assert watched(["a"], "a") is None
    assert watched([], "a") is None
    # A worker not in the list (draining, or not seen live yet) still watches one.
    assert watched(["a", "c"], "b") == "c"
    assert watched(["a", "b"], "c") == "a"


def test_a_shared_hold_by_a_watcher_never_keeps_a_dead_worker_alive(tmp_path: Path) -> None:
    path = tmp_path / "db-live-x"
    worker = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(worker, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert lock_file_free(str(path)) == 0
    watcher = os.open(path, os.O_RDONLY)
    try:
        os.close(worker)  # what the worker's end does: the lock goes, the file stays
        fcntl.flock(watcher, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a watcher granted it at that moment
        assert lock_file_free(str(path)) == 1
        assert not path.exists()  # removed, as a free file is
    finally:
        os.close(watcher)


def test_the_wait_returns_when_the_worker_lets_go_and_at_once_for_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "db-live-y"
    worker = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(worker, fcntl.LOCK_EX | fcntl.LOCK_NB)
    gone = threading.Event()
    waiter = threading.Thread(target=wait_until_free, args=(path, gone.set), daemon=True)
    waiter.start()
    # While the worker holds its file, the waiter waits, and holds nothing.
    assert lock_file_free(str(path)) == 0
    assert not gone.is_set()
    os.close(worker)
    assert gone.wait(10), "the wait did not return when the lock went"
    waiter.join(10)
    # The waiter let go: the file is free to take exclusively.
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    missing = threading.Event()
    wait_until_free(tmp_path / "db-live-none", missing.set)
    assert missing.is_set()


async def test_sqlite_listeners_wake_by_inotify_and_by_the_files_status_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wake file wakes listeners through an inotify watch where there is one (Linux),
    and through a read of its status every WAKE_CHECK seconds where there is none."""
    async with opened(f"sqlite:///{tmp_path / 'w.db'}", migrate=True) as store:
        for inotify in (True, False):
            if not inotify:
                monkeypatch.setattr(sqlite_store, "wake_watch", lambda path: None)
            woken = asyncio.Event()
            listener = asyncio.create_task(store.listen(woken.set))
            try:
                await asyncio.wait_for(woken.wait(), 10)  # once at the start
                woken.clear()
                await add(store, "dispatch", f"city-{inotify}")
                await asyncio.wait_for(woken.wait(), 10)
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener


async def test_a_worker_takes_its_lock_file_over_from_watchers_of_its_former_self(tmp_path: Path) -> None:
    """A worker restarted under the same id takes its lock although a watcher (say in a
    stopped process) still holds the old file shared: the file stands for no worker."""
    live = FileLiveness("w1", tmp_path / "db")
    watcher = os.open(os.fspath(live.path), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(watcher, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted when the former w1 died
        await live.ensure()
        assert live.held
        assert lock_file_free(os.fspath(live.path)) == 0
    finally:
        os.close(watcher)
        await live.release()
    assert lock_file_free(os.fspath(live.path)) == 1
