"""Session-bound liveness: a lock that dies with a worker's process or its session.

A lease covers a worker that is paused, hung or cut off, but only once its TTL has run
out. Most failures are crashes, and the database (or, on SQLite, the kernel) knows of a
crash at once: the dead process's connection closes, and with it every session lock it
held. So each worker also holds, for its whole life, a lock only its own session can
hold:

- PostgreSQL: a session-level advisory lock (:func:`postgresql_key` of the worker id) on
  one connection kept for that purpose;
- MySQL/MariaDB: ``GET_LOCK`` on a name derived from the database and the worker id
  (:func:`mysql_name`), on one connection kept for that purpose;
- SQLite: ``flock`` on a file per worker beside the database file
  (:func:`sqlite_lock_path`).

The worker's row records the lock's identity (column ``liveness``; NULL for a worker
that holds none). A worker whose lock is free is dead: whoever claims next ends its lease
on the database, at the database's clock, in the transaction that claims, and the tasks
move with new terms; the cluster view leaves it out, so that fair shares grow at once.
Claimers never queue for a dead worker's row: one that another transaction holds (a
concurrent claim ending the same lease) is passed over, and the dead worker's tasks are
free to every claimer all the same, since its free lock alone makes it dead.
Ending a lease early is always safe: every fence and renewal already refuses an expired
lease. A worker that notices its own lock gone (its liveness connection was closed under
it) stops trusting its lease, fences itself and joins again with a new lock.

Workers also *watch* each other's locks (:meth:`Liveness.watch`), so that a crash is
noticed at once rather than at the others' next poll: each worker waits, in a wait that
sends nothing while it blocks, to take the lock of one other live worker (the next id
after its own among the live workers it saw at its last poll, a ring: with two workers or
more every worker is watched), and when the wait succeeds (the watched worker is gone)
lets the lock go at once and polls. That poll's claim ends the dead worker's lease, as
any claim would, and wakes the other workers (a claim that ends a lease frees tasks), so
that they claim their shares too. A watch fires at most once per membership seen: a
target that is already gone, or holds no lock, wakes its watcher once, not in a loop. The
claim statement alone still decides who is dead (its lock is free; a watcher's momentary
hold never counts as the worker's), so watching only makes a takeover come sooner.

A store URL option turns this off, ``liveness=lease`` (default ``session``): behind a
transaction-pooling proxy such as PgBouncer in ``pool_mode=transaction``, a "session"
is not one process's, and the lease alone must decide. Taking the lock checks that the
same session holds it a statement later, which catches the obvious cases of such a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from tenure.errors import InvalidStoreURL, StoreUnavailable, WorkerIdInUse
from tenure.inputs import quote

log = logging.getLogger("tenure.store.liveness")

#: The values of the ``liveness`` store URL option; the first is the default.
MODES = ("session", "lease")

#: Why a lock that was just taken may not show as this session's: said at start-up.
POOLING_HINT = (
    "is a transaction-pooling proxy (PgBouncer pool_mode=transaction, ProxySQL multiplexing) "
    "between tenure and the database? Session locks do not hold there: add liveness=lease "
    "to the store URL, and the lease alone decides when a worker is dead"
)


def liveness_option(label: str, query: Sequence[tuple[str, str]]) -> str:
    """The ``liveness`` option of a store URL's query pairs: ``session`` (default) or ``lease``."""
    given = [v for k, v in query if k == "liveness"]
    if len(given) > 1:
        raise InvalidStoreURL(f"{label} URL option liveness is given more than once")
    if not given:
        return MODES[0]
    value = given[0].strip().lower()
    if value not in MODES:
        raise InvalidStoreURL(
            f"{label} URL option liveness must be session or lease, got {quote(given[0])} "
            "(lease: behind a transaction-pooling proxy, where session locks do not hold)"
        )
    return value


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def postgresql_key(worker_id: str) -> int:
    """The advisory lock key of a worker: 63 bits, so that pg_locks shows it as
    ``classid = key >> 32``, ``objid = key & 0xffffffff`` (``objsubid = 1``) without a sign."""
    return int.from_bytes(_digest(f"tenure-liveness/{worker_id}")[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def mysql_name(database: str, worker_id: str) -> str:
    """The ``GET_LOCK`` name of a worker. Named locks are server-wide, so the database is part
    of it; 52 characters, under the server's limit of 64."""
    return "tenure-live-" + _digest(f"{database}/{worker_id}").hex()[:40]


def sqlite_lock_path(db_path: Path, worker_id: str) -> Path:
    """The lock file of a worker, beside the database file (as its -wal and -shm are)."""
    db = db_path.resolve()
    return db.with_name(f"{db.name}-live-{_digest(worker_id).hex()[:20]}")


class Liveness:
    """A worker's liveness lock, as :meth:`Store.hold_liveness` hands it out.

    This base class is the ``liveness=lease`` one: it holds nothing, is never lost, and
    leaves the lease alone to decide. Session-bound subclasses take their lock in
    :meth:`ensure` and set :attr:`lost` when it goes.
    """

    #: ``session`` when a lock that dies with the session stands for the worker, else ``lease``.
    mode = "lease"

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        #: Set when the lock was held and is no more; cleared when :meth:`ensure` takes it again.
        self.lost = asyncio.Event()
        self.reason = ""
        self._held = False
        #: The membership the last :meth:`watch` saw, the worker watched, and what wakes.
        self._watch_members: frozenset[str] | None = None
        self._watched: str | None = None
        self._watch_wake: Callable[[], None] | None = None

    @property
    def held(self) -> bool:
        """True while the lock is held, as far as this process knows."""
        return self._held and not self.lost.is_set()

    @property
    def token(self) -> int | str | None:
        """What the worker's row records of the lock while it is held; None otherwise."""
        return None

    async def ensure(self) -> None:
        """Hold the lock, taking it (again) if it is not held.

        Raises :class:`~tenure.errors.WorkerIdInUse` if another live session holds it,
        :class:`~tenure.errors.StoreUnavailable` if the database does not answer, and
        :class:`~tenure.errors.InvalidStoreURL` if the lock just taken does not show as
        this session's (a transaction-pooling proxy).
        """
        if self.held or self.mode == "lease":
            return
        await self._drop()
        await self._take()
        self._held = True
        self.reason = ""
        self.lost.clear()

    async def release(self) -> None:
        """Let the lock go (the worker has left). Idempotent."""
        self._held = False
        await self._drop()

    def _mark_lost(self, why: str) -> None:
        if self._held and not self.lost.is_set():
            log.error("liveness lock of worker %s lost: %s", self.worker_id, why)
            self.reason = why
            self.lost.set()

    async def _take(self) -> None:
        """Take the lock; raise as :meth:`ensure` says."""

    async def _drop(self) -> None:
        """Let go of whatever is left of the lock and its connection; never raises."""

    # -- watching another worker's lock -------------------------------------------------

    def watch(self, live: Sequence[str], wake: Callable[[], None]) -> None:
        """Watch the lock of the worker after this one in ``live`` (the live workers seen at
        a poll; see :func:`watched`), and call ``wake`` (on the event loop) when it is free.

        Called at every poll; does something only when ``live`` differs from the previous
        call's, so that a watch that fired (the watched worker died) is not started again
        before a poll has seen the membership change. Does nothing with ``liveness=lease``.
        """
        members = frozenset(live)
        if self.mode == "lease" or members == self._watch_members:
            return
        self._watch_members = members
        self._watch_wake = wake
        target = watched(live, self.worker_id)
        if target is not None:
            log.debug("worker %s watches the liveness lock of %s", self.worker_id, target)
        self._retarget(target)

    @property
    def watching(self) -> str | None:
        """The worker whose lock this one watches now, if any (for tests and logs)."""
        return self._watched

    def _retarget(self, target: str | None) -> None:
        """Wait for ``target``'s lock from now on (None: for nobody), calling
        :meth:`_watched_gone` when it is free. Subclasses of session-bound locks implement it."""
        self._watched = target

    def _watched_gone(self, target: str) -> None:
        """The watched worker's lock was free: wake the worker (on the event loop)."""
        log.info("worker %s found the liveness lock of %s free (it died or left): polling now", self.worker_id, target)
        if self._watch_wake is not None:
            self._watch_wake()


@asynccontextmanager
async def holding(registry: dict[str, Liveness], handle: Liveness) -> AsyncIterator[Liveness]:
    """Keep ``handle`` in the store's ``registry`` (register_worker reads it) until the block
    ends, then let the lock go."""
    if registry.get(handle.worker_id) is not None:
        raise WorkerIdInUse(f"worker id {handle.worker_id!r} already holds its liveness lock in this process")
    registry[handle.worker_id] = handle
    try:
        yield handle
    finally:
        if registry.get(handle.worker_id) is handle:
            del registry[handle.worker_id]
        await asyncio.shield(handle.release())


async def listen_on(wakes: list[Callable[[], None]], wake: Callable[[], None]) -> None:
    """Have a liveness session's wake-ups call ``wake`` until cancelled (a store whose
    worker holds a liveness lock listens on that session instead of a connection of its
    own). Calls ``wake`` once at the start: wake-ups sent before were not heard."""
    wakes.append(wake)
    try:
        wake()
        await asyncio.Event().wait()  # until cancelled
    finally:
        wakes.remove(wake)


async def listen(
    wake: Callable[[], None],
    session: list[Callable[[], None]] | None,
    connection: Callable[[Callable[[], None], Callable[[], None]], Awaitable[None]],
    errors: tuple[type[Exception], ...],
) -> None:
    """Call ``wake`` whenever tasks are released or changed, until cancelled: on the
    wake-ups of the liveness ``session`` this store holds, if any (:func:`listen_on`),
    else on connections of its own. ``connection(wake, connected)`` opens one and listens
    on it until it fails, calling ``connected()`` once it listens; after an error among
    ``errors`` this logs it and opens another, waiting 0.2 s, doubling up to 5 s, from
    the last connection that listened."""
    if session is not None:
        await listen_on(session, wake)
        return
    delay = 0.2

    def connected() -> None:
        nonlocal delay
        delay = 0.2

    while True:
        try:
            await connection(wake, connected)
        except errors as exc:
            log.warning("listening for changes failed (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def stopped(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (if there is one) and wait for it to end, whatever it raises."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def watched(live: Sequence[str], worker_id: str) -> str | None:
    """The worker ``worker_id`` watches among ``live``: the next id after its own in sorted
    order, wrapping round (a ring, so that every live worker is watched by one other);
    None when no other worker is live."""
    others = sorted(set(live) - {worker_id})
    if not others:
        return None
    return next((w for w in others if w > worker_id), others[0])


def held_token(registry: dict[str, Liveness], worker_id: str) -> int | str | None:
    """The lock identity to record in ``worker_id``'s row: None unless this process holds it."""
    handle = registry.get(worker_id)
    return handle.token if handle is not None and handle.held else None


# -- SQLite: one lock file per worker ---------------------------------------------------


class FileLiveness(Liveness):
    """``flock`` on a file beside the database, held by an open descriptor for the
    worker's life; the kernel lets it go when the process ends, however it ends."""

    mode = "session"

    def __init__(self, worker_id: str, db_path: Path) -> None:
        super().__init__(worker_id)
        self._db_path = db_path
        self.path = sqlite_lock_path(db_path, worker_id)
        self._fd: int | None = None
        #: The threads waiting for a lock file, by file (see :meth:`_retarget`).
        self._waiting: dict[Path, threading.Thread] = {}

    def _retarget(self, target: str | None) -> None:
        """Wait for ``target``'s lock file in a thread of its own (``flock`` blocks, and
        cannot be interrupted): shared, so that a waiter never stands in the way of another
        waiter, and let go the moment it is granted (:func:`wait_until_free`).

        A thread keeps waiting for a worker no longer watched until that worker's lock is
        let go (it then wakes this worker once more, for nothing): there is at most one such
        thread per live worker this one has watched, since a worker watched again reuses its
        thread. The threads are daemons, and a file's ``flock`` held by a waiter is shared,
        which :func:`lock_file_free` never mistakes for its worker's."""
        super()._retarget(target)
        for path, thread in list(self._waiting.items()):
            if not thread.is_alive():
                del self._waiting[path]
        if target is None:
            return
        path = sqlite_lock_path(self._db_path, target)
        if path in self._waiting:
            return
        loop = asyncio.get_running_loop()

        def gone() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._watched_gone, target)

        thread = threading.Thread(
            target=wait_until_free, args=(path, gone), name=f"tenure-watch-{target}"[:60], daemon=True
        )
        self._waiting[path] = thread
        thread.start()

    @property
    def token(self) -> str | None:
        return str(self.path) if self.held else None

    async def _take(self) -> None:
        # Another process may hold the file for an instant to test it (lock_file_free):
        # try a few times before calling it taken.
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot create the liveness lock file {quote(str(self.path))}: {exc.strerror}"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if _held_shared_only(fd, self.path):
                    # Watchers' shared holds on the file of a worker gone (one may sit in a
                    # stopped process): no worker's. A new file takes its place.
                    os.close(fd)
                    continue
                os.close(fd)
                await asyncio.sleep(0.02)
                continue
            # A tester may have removed the file between our open and our lock: a lock on
            # a file no longer at the path would stand for nothing.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)
        raise WorkerIdInUse(
            f"worker id {self.worker_id!r} is held by a live worker (its lock file {str(self.path)!r} is taken)"
        )

    async def _drop(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            # Removed while still held, so that no tester can mistake a new file for it.
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)
        os.close(fd)


def _held_shared_only(fd: int, path: Path) -> bool:
    """True if the lock file open as ``fd`` (found held) is held only shared, by watchers:
    then it is removed (if still at ``path``), and stands for no worker."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    return True


def lock_file_free(path: str | None) -> int:
    """1 if no process holds the lock file at ``path`` exclusively (its worker is dead), else 0.

    Runs inside SQLite statements (registered as ``tenure_lock_free``). A free file is
    removed while this holds it, so that dead workers leave no files behind; a missing one
    is free. Errors other than "held" count as held: the lease then decides.
    """
    if not path:
        return 0
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return 1
    except OSError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                log.warning("cannot test the liveness lock file %r: %s", path, exc)
                return 0
            # Held, but maybe only shared: by watchers (wait_until_free) at the moment they
            # are granted it, its worker gone. A worker holds its file exclusively.
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return 0
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
        return 1
    finally:
        os.close(fd)


def wait_until_free(path: Path, gone: Callable[[], None]) -> None:
    """Block until no process holds the lock file at ``path`` exclusively (its worker is
    gone), let go at once, then call ``gone``. Runs in a thread of its own.

    The wait is a shared ``flock`` on an open file description of our own, granted when the
    worker's exclusive one goes (the kernel lets it go when the process ends, however it
    ends); held for an instant only, and shared, so that :func:`lock_file_free` still sees
    the worker dead meanwhile. A file that is missing already is a worker gone (or one that
    holds no lock file): ``gone`` is called at once."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        gone()
        return
    except OSError as exc:
        log.warning("cannot watch the liveness lock file %r: %s", str(path), exc)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError as exc:
        log.warning("cannot watch the liveness lock file %r: %s", str(path), exc)
        return
    finally:
        os.close(fd)  # lets the shared lock go
    gone()
