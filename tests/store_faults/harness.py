"""The store-fault tests' harness: real worker processes (``runner.py``) on a real store,
and raw access to the database server behind it, to cut connections and restart it.

A :class:`FaultCluster` owns every worker process it starts; the ``fault_cluster`` fixture
(conftest.py) SIGKILLs and reaps them all when the test ends, passed or failed, restarts
the database server if a test left it down, and prints each worker's log tail.

Everything is observed through the database: the ``fault_commits`` table the handlers
write through fenced transactions (read over a fresh connection each time, so that the
observation itself survives a server restart), and tenure's own tables through the
store API. Waits poll with a deadline, never sleep a fixed time. Database errors while
polling (the server is down, restarting) count as "not yet".

Times compared with the database's ``committed_at`` come from the database's clock
(:meth:`Database.now`), never from this process's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from tenure.errors import StoreError
from tenure.models import Task
from tenure.schedule import Every, latest_slot
from tenure.store import Store
from tenure.store.sqlite import parse_sqlite_url

RUNNER = Path(__file__).with_name("runner.py")
#: How often waits re-check their condition.
POLL = 0.05
#: Longest any wait may take unless the test passes a tighter one.
DEFAULT_WITHIN = 30.0

TaskId = tuple[str, str]


class DatabaseUnavailable(Exception):
    """The test's own raw access to the database failed (e.g. the server is down)."""


@dataclass(frozen=True, kw_only=True)
class Timing:
    """A worker's lease settings, as passed to ``runner.py``."""

    ttl: float = 2.0
    heartbeat: float = 0.4
    poll: float = 0.3
    trust_margin: float = 0.5
    grace: float = 1.0

    def argv(self) -> list[str]:
        return [
            "--ttl", str(self.ttl), "--heartbeat", str(self.heartbeat), "--poll", str(self.poll),
            "--trust-margin", str(self.trust_margin), "--grace", str(self.grace),
        ]  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Commit:
    """One row of ``fault_commits``: a run whose fenced commit the database accepted."""

    id: int
    kind: str
    key: str
    term: int
    worker: str
    slot: float
    committed_at: float

    @property
    def task(self) -> TaskId:
        return (self.kind, self.key)


# -- raw access to each kind of database ----------------------------------------------------

COMMIT_COLUMNS = "id, kind, tkey, term, worker, slot, committed_at"


def _commit(row: Iterable[Any]) -> Commit:
    id_, kind, key, term, worker, slot, at = row
    return Commit(
        id=int(id_),
        kind=str(kind),
        key=str(key),
        term=int(term),
        worker=str(worker),
        slot=float(slot),
        committed_at=float(at),
    )


class Database(Protocol):
    """Raw access to the database behind a store, and to its server."""

    dialect: str

    def create_commits_table(self) -> None: ...

    def commits(self) -> list[Commit]:
        """Every accepted commit, in id order (per task, the order they committed in)."""
        ...

    def now(self) -> float:
        """The database's clock, epoch seconds."""
        ...

    def cut(self, pids: Collection[int]) -> list[str]:
        """Kill every database session of these processes; describe the sessions killed."""
        ...

    def server_up(self) -> bool: ...

    def stop_server(self) -> None: ...

    def start_server(self) -> None: ...


def client_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets process ``pid`` has open (from /proc), which is how
    the database server names a client connection (``client_port``, ``host:port``)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
                if m:
                    inodes.add(m.group(1))
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _tool(name: str) -> str:
    """The full path of a command-line tool the harness runs."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        raise AssertionError(f"{name} is not installed, or not on PATH")
    return path


def _wait_until(check: Callable[[], bool], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(0.1)


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, url: str) -> None:
        self._path, _ = parse_sqlite_url(url)

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self._path, timeout=10)) as db, db:
            return [tuple(r) for r in db.execute(sql).fetchall()]

    def create_commits_table(self) -> None:
        self._rows(
            "CREATE TABLE fault_commits (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, "
            "tkey TEXT NOT NULL, term INTEGER NOT NULL, worker TEXT NOT NULL, slot REAL NOT NULL, "
            "committed_at REAL NOT NULL)"
        )

    def commits(self) -> list[Commit]:
        return [_commit(r) for r in self._rows(f"SELECT {COMMIT_COLUMNS} FROM fault_commits ORDER BY id")]

    def now(self) -> float:
        return float(self._rows("SELECT (julianday('now') - 2440587.5) * 86400.0")[0][0])

    def cut(self, pids: Collection[int]) -> list[str]:
        raise NotImplementedError("an embedded SQLite store has no connections to cut")

    def server_up(self) -> bool:
        return True

    def stop_server(self) -> None:
        raise NotImplementedError("an embedded SQLite store has no server")

    def start_server(self) -> None:
        pass


class PostgreSQLDatabase:
    """A PostgreSQL database, over psycopg; its server is the Debian cluster on the URL's port."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self._url = url
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 5432

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            with psycopg.connect(self._url, autocommit=True, connect_timeout=2) as conn:
                cur = conn.execute(sql.encode(), params)
                return [tuple(r) for r in cur.fetchall()] if cur.description else []
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    def create_commits_table(self) -> None:
        self._rows(
            "CREATE TABLE fault_commits (id BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL, tkey TEXT NOT NULL, "
            "term BIGINT NOT NULL, worker TEXT NOT NULL, slot DOUBLE PRECISION NOT NULL, "
            "committed_at DOUBLE PRECISION NOT NULL)"
        )

    def commits(self) -> list[Commit]:
        return [_commit(r) for r in self._rows(f"SELECT {COMMIT_COLUMNS} FROM fault_commits ORDER BY id")]

    def now(self) -> float:
        return float(self._rows("SELECT extract(epoch from clock_timestamp())::double precision")[0][0])

    def _sessions(self, pids: Collection[int]) -> str:
        ports = sorted(set().union(*(client_ports(p) for p in pids)))
        assert ports, f"processes {sorted(pids)} have no TCP connection open (is the store URL on TCP?)"
        return "datname = current_database() AND client_port IN (" + ", ".join(map(str, ports)) + ")"

    def cut(self, pids: Collection[int]) -> list[str]:
        rows = self._rows(
            "SELECT application_name, state, pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE {self._sessions(pids)}"
        )
        return [f"{app or '(listen)'}:{state}" for app, state, _ in rows]

    def _cluster(self) -> tuple[str, str]:
        out = subprocess.run([_tool("pg_lsclusters"), "--no-header"], check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            version, name, port, *_ = line.split()
            if int(port) == self._port:
                return version, name
        raise AssertionError(f"no PostgreSQL cluster of this host listens on port {self._port}:\n{out}")

    def _ctl(self, action: str) -> None:
        version, name = self._cluster()
        subprocess.run(
            [_tool("pg_ctlcluster"), "--skip-systemctl-redirect", version, name, action],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def server_up(self) -> bool:
        ready = [_tool("pg_isready"), "-q", "-h", self._host, "-p", str(self._port)]
        return subprocess.run(ready, check=False).returncode == 0

    def stop_server(self) -> None:
        self._ctl("stop")  # waits until the server is down

    def start_server(self) -> None:
        if not self.server_up():
            self._ctl("start")
        _wait_until(self.server_up, "PostgreSQL to accept connections", 30)


class MySQLDatabase:
    """A MySQL/MariaDB database, through the ``mariadb`` command-line client (so the tests
    do not depend on which Python driver the store uses). Admin statements (processlist,
    KILL, shutdown) run as ``root``, like ``.ci/run``'s."""

    dialect = "mysql"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 3306
        self._user = unquote(parts.username or "root")
        self._password = unquote(parts.password) if parts.password else None
        self._db = parts.path.lstrip("/")
        self._restart_args: list[str] = []
        self._pid_file = ""

    def _client(self, *, admin: bool) -> list[str]:
        argv = [_tool("mariadb"), "--protocol=TCP", "-h", self._host, "-P", str(self._port), "-N", "-B"]
        if admin:
            return [*argv, "-u", "root"]
        argv += ["-u", self._user]
        if self._password:
            argv.append(f"--password={self._password}")
        return [*argv, self._db]

    def _rows(self, sql: str, *, admin: bool = False) -> list[list[str]]:
        proc = subprocess.run(
            [*self._client(admin=admin), "-e", sql], check=False, capture_output=True, text=True, timeout=20
        )
        if proc.returncode != 0:
            raise DatabaseUnavailable(proc.stderr.strip())
        return [line.split("\t") for line in proc.stdout.splitlines()]

    def create_commits_table(self) -> None:
        self._rows(
            "CREATE TABLE fault_commits (id BIGINT AUTO_INCREMENT PRIMARY KEY, kind VARCHAR(64) NOT NULL, "
            "tkey VARCHAR(200) NOT NULL, term BIGINT NOT NULL, worker VARCHAR(200) NOT NULL, "
            "slot DOUBLE NOT NULL, committed_at DOUBLE NOT NULL) ENGINE=InnoDB"
        )

    def commits(self) -> list[Commit]:
        return [_commit(r) for r in self._rows(f"SELECT {COMMIT_COLUMNS} FROM fault_commits ORDER BY id")]

    def now(self) -> float:
        return float(self._rows("SELECT UNIX_TIMESTAMP(NOW(6))")[0][0])

    def _session_ids(self, pids: Collection[int]) -> dict[str, str]:
        ports = set().union(*(client_ports(p) for p in pids))
        assert ports, f"processes {sorted(pids)} have no TCP connection open (is the store URL on TCP?)"
        found = {}
        for id_, host, command in self._rows(
            "SELECT ID, HOST, COMMAND FROM information_schema.PROCESSLIST WHERE HOST LIKE '%:%'", admin=True
        ):
            if int(host.rsplit(":", 1)[1]) in ports:
                found[id_] = command
        return found

    def cut(self, pids: Collection[int]) -> list[str]:
        sessions = self._session_ids(pids)
        for id_ in sessions:
            with contextlib.suppress(DatabaseUnavailable):  # it may have ended meanwhile
                self._rows(f"KILL CONNECTION {int(id_)}", admin=True)
        return [f"{id_}:{command}" for id_, command in sessions.items()]

    def _admin(self, command: str) -> list[str]:
        return [
            _tool("mariadb-admin"),
            "--protocol=TCP",
            "-h",
            self._host,
            "-P",
            str(self._port),
            "-u",
            "root",
            command,
        ]

    def server_up(self) -> bool:
        return subprocess.run(self._admin("ping"), check=False, capture_output=True, timeout=10).returncode == 0

    def stop_server(self) -> None:
        # Remember how the server runs, to start it again the same way (the default
        # instance, or another one on another port).
        datadir, port, socket, pid_file = self._rows("SELECT @@datadir, @@port, @@socket, @@pid_file", admin=True)[0]
        self._restart_args = [f"--datadir={datadir}", f"--port={port}", f"--socket={socket}", f"--pid-file={pid_file}"]
        self._pid_file = pid_file
        pid = Path(pid_file).read_text().strip() if Path(pid_file).is_file() else None
        subprocess.run(self._admin("shutdown"), check=True, capture_output=True, timeout=60)
        _wait_until(lambda: not self.server_up(), "MariaDB to stop answering", 30)
        if pid:  # and to exit: until then, starting it again would be a no-op
            _wait_until(lambda: not Path(f"/proc/{pid}").exists(), "MariaDB to exit", 30)

    def start_server(self) -> None:
        if not self.server_up():
            # As .ci/run starts it; with the settings it ran with if this harness stopped it.
            argv = [_tool("start-stop-daemon"), "--start", "--oknodo", "--background"]
            if self._pid_file:
                argv += ["--pidfile", self._pid_file]
            argv += ["--exec", "/usr/sbin/mariadbd"]
            if self._restart_args:
                argv += ["--", *self._restart_args]
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        _wait_until(self.server_up, "MariaDB to accept connections", 30)


def database_for(url: str) -> Database:
    """Raw access to the database a store URL names (by its scheme, like ``make_store``)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return SQLiteDatabase(url)
    if scheme in ("postgresql", "postgres"):
        return PostgreSQLDatabase(url)
    if scheme in ("mysql", "mariadb"):
        return MySQLDatabase(url)
    raise NotImplementedError(f"no raw test access for {scheme} stores")


# -- worker processes -----------------------------------------------------------------------


class WorkerProc:
    """The test's handle on one worker process."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path, events: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log
        self.events_path = events
        self.signalled = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.signalled = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, ev: str | None = None) -> list[dict[str, Any]]:
        """The worker's side-channel events, in order (``ev``: only that kind)."""
        if not self.events_path.exists():
            return []
        out = []
        for line in self.events_path.read_text().splitlines():
            if line.endswith("}"):  # a line cut by SIGKILL mid-write is ignored
                rec = json.loads(line)
                if ev is None or rec["ev"] == ev:
                    out.append(rec)
        return out

    def in_fenced_tx(self) -> bool:
        """True if the worker's handler has inserted its row and not yet seen its fenced
        transaction end (it holds it open ``params["hold"]`` seconds after the insert)."""
        open_runs: set[tuple[Any, ...]] = set()
        for e in self.events():
            run = (e.get("kind"), e.get("key"), e.get("term"), e.get("slot"))
            if e["ev"] == "inserted":
                open_runs.add(run)
            elif e["ev"] in ("committed", "failed", "refused", "cancelled"):
                open_runs.discard(run)
        return bool(open_runs)

    def explain(self, what: str) -> str:
        return f"worker {self.name} (pid {self.pid}): {what}\n--- its log (tail) ---\n{self.log()[-4000:]}"


class FaultCluster:
    """A store of one kind, raw access to its database, and the workers started on it."""

    #: The worker program :meth:`start` runs.
    runner: Path = RUNNER

    def __init__(self, kind: str, url: str, store: Store, db: Database, tmp: Path) -> None:
        self.kind = kind
        self.url = url
        self.store = store
        self.db = db
        self.tmp = tmp
        self.workers: dict[str, WorkerProc] = {}

    def start(
        self,
        name: str,
        *,
        timing: Timing | None = None,
        prefix: list[str] | None = None,
        env: dict[str, str] | None = None,
        url: str | None = None,
    ) -> WorkerProc:
        """Start a worker process with id ``name`` running :attr:`runner` (``prefix``: e.g.
        a ``faketime`` or ``ip netns exec`` command line that execs the worker, so the
        process keeps its pid; ``url``: the store as this worker reaches it, say through a
        relay, instead of :attr:`url`)."""
        assert name not in self.workers, f"{name} already started"
        log = self.tmp / f"worker-{name}.log"
        events = self.tmp / f"events-{name}.jsonl"
        argv = [
            *(prefix or []), sys.executable, str(self.runner), url or self.url, "--id", name,
            "--events", str(events), *(timing or Timing()).argv(),
        ]  # fmt: skip
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        w = WorkerProc(name, proc, log, events)
        self.workers[name] = w
        return w

    def reap(self) -> None:
        """SIGKILL and reap every worker (the fixture's finalizer)."""
        for w in self.workers.values():
            w.kill()
        for w in self.workers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=10)

    def pids(self, names: Iterable[str] | None = None) -> list[int]:
        return [self.workers[n].pid for n in (names if names is not None else self.workers)]

    # -- observation ------------------------------------------------------------------------

    async def add_tasks(self, keys: Iterable[str], *, every: float, params: dict[str, Any]) -> list[TaskId]:
        added = []
        for key in keys:
            await self.store.add_task(
                kind="tick", key=key, schedule=Every(every), params_json=json.dumps(params), enabled=True
            )
            added.append(("tick", key))
        return added

    async def tasks(self) -> dict[TaskId, Task]:
        return {(t.kind, t.key): t for t in await self.store.list_tasks()}

    def commits(self) -> list[Commit]:
        return self.db.commits()

    async def wait_for(
        self, condition: Callable[[], Awaitable[bool]], what: str, *, within: float = DEFAULT_WITHIN
    ) -> None:
        """Poll ``condition`` until it holds. Fails after ``within`` s, and at once if a
        worker the test did not kill has died. Database errors count as "not yet"."""
        deadline = time.monotonic() + within
        last_error = ""
        while True:
            try:
                if await condition():
                    return
            except (StoreError, DatabaseUnavailable) as exc:
                last_error = f" (last database error: {exc})"
            for w in self.workers.values():
                if not w.alive() and not w.signalled:
                    raise AssertionError(w.explain(f"died ({w.proc.returncode}) while waiting for {what}"))
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within} s waiting for {what}{last_error}")
            await asyncio.sleep(POLL)

    async def wait_balanced(self, names: Iterable[str], *, within: float = DEFAULT_WITHIN) -> dict[str, int]:
        """Wait until the named workers hold every enabled task between them, fairly
        (counts differ by at most one), and every one has committed at its current term."""
        names = sorted(names)

        async def balanced() -> bool:
            tasks = {k: t for k, t in (await self.tasks()).items() if t.enabled}
            counts = dict.fromkeys(names, 0)
            for t in tasks.values():
                if t.owner not in counts:
                    return False
                counts[t.owner] += 1
            if max(counts.values()) - min(counts.values()) > 1:
                return False
            committed = {(c.kind, c.key, c.term) for c in self.commits()}
            return all((t.kind, t.key, t.term) in committed for t in tasks.values())

        await self.wait_for(balanced, f"{names} to share the tasks and commit", within=within)
        tasks = await self.tasks()
        return {n: sum(1 for t in tasks.values() if t.owner == n and t.enabled) for n in names}

    async def wait_all_commit_after(self, tasks: Collection[TaskId], after: float, what: str, *, within: float) -> None:
        """Wait until every task has a commit whose database time is after ``after``."""

        async def done() -> bool:
            return set(tasks) <= {c.task for c in self.commits() if c.committed_at > after}

        await self.wait_for(done, what, within=within)

    async def first_answer(self, *, within: float = DEFAULT_WITHIN) -> float:
        """Poll the database until it answers; return its clock at that first answer."""
        deadline = time.monotonic() + within
        while True:
            try:
                return self.db.now()
            except DatabaseUnavailable:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.02)

    def log_has(self, name: str, text: str, *, after_line: int = 0) -> bool:
        return text in "\n".join(self.workers[name].log().splitlines()[after_line:])

    def log_lines(self, name: str) -> int:
        return len(self.workers[name].log().splitlines())


# -- properties -----------------------------------------------------------------------------


def assert_fenced_history(commits: list[Commit], period: float) -> None:
    """Safety over the whole history of accepted commits: for each task, in commit order,
    terms never go back, each term belongs to one worker only, no slot is committed twice,
    and every slot lies on the task's grid."""
    by_task: dict[TaskId, list[Commit]] = {}
    for c in commits:
        by_task.setdefault(c.task, []).append(c)
    for task, cs in by_task.items():
        for prev, cur in itertools.pairwise(cs):
            assert cur.term >= prev.term, f"STALE COMMIT ACCEPTED: {task}: term went back from {prev} to {cur}"
        owner_of_term: dict[int, str] = {}
        for c in cs:
            assert owner_of_term.setdefault(c.term, c.worker) == c.worker, (
                f"STALE COMMIT ACCEPTED: {task}: term {c.term} committed by {owner_of_term[c.term]} and {c.worker}"
            )
            assert latest_slot(Every(period), c.kind, c.key, c.slot) == c.slot, f"{task}: slot off the grid: {c}"
        slots = [c.slot for c in cs]
        assert len(slots) == len(set(slots)), f"{task}: a slot was committed twice: {sorted(slots)}"


def recovery(commits: list[Commit], tasks: Collection[TaskId], after: float) -> dict[str, float]:
    """For each task, database seconds from ``after`` to its first commit after it."""
    first: dict[TaskId, float] = {}
    for c in commits:
        if c.task in tasks and c.committed_at > after and c.task not in first:
            first[c.task] = c.committed_at - after
    return {f"{k}/{key}": round(d, 3) for (k, key), d in sorted(first.items())}


def kill_signal(w: WorkerProc) -> None:
    """SIGKILL a worker on purpose (wait_for then does not treat its death as a failure)."""
    w.signalled = True
    os.kill(w.pid, signal.SIGKILL)
