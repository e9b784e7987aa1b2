"""Helpers shared by the bench scripts: stores, worker processes, /proc readings, reports.

Benches measure; they never assert. Each script prints one JSON document, then a short
human table comparing the figures with the targets of the worker-runtime issue.

Worker processes run ``bench_worker.py`` with ``sys.executable``; set
``BENCH_WORKER_SCRIPT`` to run another runner instead (a profiling wrapper, say).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg

import tenure
from tenure.errors import InvalidStoreURL
from tenure.store import dialect_of as store_dialect
from tenure.store.sqlite import parse_sqlite_url

BENCH_DIR = Path(__file__).resolve().parent
WORKER_SCRIPT = Path(os.environ.get("BENCH_WORKER_SCRIPT", BENCH_DIR / "bench_worker.py"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULTS = tenure.Settings()

#: The fenced bench's own table: one column list, with each dialect's types (MariaDB
#: indexes no TEXT without a length, and ``key`` is a reserved word there).
_COMMITS_COLUMNS = (
    "id {id}, kind {kind} NOT NULL, {key} {name} NOT NULL, worker {name} NOT NULL, term {int} NOT NULL, "
    "scheduled_at {real} NOT NULL, committed_at {real} NOT NULL"
)
_COMMITS_TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "kind": "TEXT", "key": "key", "name": "TEXT",
               "int": "INTEGER", "real": "REAL", "engine": ""},
    "postgresql": {"id": "bigserial PRIMARY KEY", "kind": "text", "key": "key", "name": "text",
                   "int": "bigint", "real": "double precision", "engine": ""},
    "mysql": {"id": "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY", "kind": "VARCHAR(64)", "key": "`key`",
              "name": "VARCHAR(200)", "int": "BIGINT", "real": "DOUBLE", "engine": " ENGINE=InnoDB"},
}  # fmt: skip


def commits_ddl(dialect: str) -> str:
    """``CREATE TABLE IF NOT EXISTS bench_commits``, the fenced bench's own table, in ``dialect``."""
    types = _COMMITS_TYPES[dialect]
    return f"CREATE TABLE IF NOT EXISTS bench_commits ({_COMMITS_COLUMNS.format(**types)}){types['engine']}"


#: The database's clock in epoch seconds, per dialect (statement time, not transaction start).
DB_NOW = {
    "sqlite": "(julianday('now') - 2440587.5) * 86400.0",
    "postgresql": "extract(epoch from clock_timestamp())::double precision",
    "mysql": "UNIX_TIMESTAMP(NOW(6))",
}


# -- arguments --------------------------------------------------------------------------


def scenario_parser(
    doc: str | None,
    *,
    workers: int,
    duration: float,
    tasks: int | list[int] | None = None,
    every: float | None = None,
    warmup: float | None = None,
) -> argparse.ArgumentParser:
    """A scenario's command line, described by its module's ``doc``: --store, --workers,
    --duration and the worker settings every scenario takes, and those most take, with their
    defaults where given: --tasks (one count, or a comma-separated list if the default is a
    list), --every (the tasks' period) and --warmup."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--store",
        default=None,
        help="store URL to bench on. sqlite:///path: its tenure tables are EMPTIED before each "
        "scenario; postgresql://... or mysql://...: each scenario creates a scratch database "
        "tenure_bench_<name>_<random> on that server and drops it afterwards "
        "(default: a fresh temporary SQLite file per scenario)",
    )
    p.add_argument("--workers", type=int, default=workers, help="worker processes (default %(default)s)")
    p.add_argument("--duration", type=float, default=duration, help="measured window, seconds")
    p.add_argument("--ttl", type=float, default=DEFAULTS.lease_ttl, help="lease TTL (default %(default)s)")
    p.add_argument("--heartbeat", type=float, default=DEFAULTS.heartbeat, help="default %(default)s")
    p.add_argument("--poll", type=float, default=DEFAULTS.poll, help="default %(default)s")
    p.add_argument(
        "--timer-grid", type=float, default=DEFAULTS.timer_grid, help="the workers' timer_grid (default %(default)s)"
    )
    p.add_argument("--json-only", action="store_true", help="print the JSON only, no table")
    if isinstance(tasks, list):
        p.add_argument("--tasks", type=int_list, default=tasks, help="comma-separated task counts")
    elif tasks is not None:
        p.add_argument("--tasks", type=int, default=tasks, help="tasks (default %(default)s)")
    if every is not None:
        p.add_argument("--every", type=float, default=every, help="task period, seconds (default %(default)s)")
    if warmup is not None:
        p.add_argument("--warmup", type=float, default=warmup, help="seconds after the tasks are spread out")
    return p


def settings_of(args: argparse.Namespace) -> dict[str, float]:
    settings = {"lease_ttl": args.ttl, "heartbeat": args.heartbeat, "poll": args.poll, "timer_grid": args.timer_grid}
    tenure.Settings(**settings)  # validate early
    return settings


def int_list(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


# -- stores -----------------------------------------------------------------------------


def dialect_of(url: str) -> str:
    """The store URL's dialect; exits naming the URL if it is not one of ours."""
    try:
        return store_dialect(url)
    except InvalidStoreURL as exc:
        raise SystemExit(str(exc)) from None


@dataclass
class BenchStore:
    """One scenario's store: its URL, dialect, and (SQLite) the file behind it.

    :meth:`query` takes SQLite-style SQL (``?`` placeholders, a bare ``key`` column) and
    translates it for the server dialects; the bench's reads use their own connection,
    never one a worker uses."""

    url: str
    path: Path | None = None
    dialect: str = "sqlite"
    _pg: Any = field(default=None, repr=False)

    def connect(self) -> sqlite3.Connection:
        """A plain sqlite3 connection for the bench's own reads (never during a fenced test)."""
        assert self.path is not None, "connect() is for SQLite stores"
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def translate(self, sql: str) -> str:
        if self.dialect == "sqlite":
            return sql
        sql = sql.replace("%", "%%").replace("?", "%s")
        if self.dialect == "mysql":
            sql = re.sub(r"(?<![`\w])key(?![`\w])", "`key`", sql)
        return sql

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.dialect == "sqlite":
            conn = self.connect()
            try:
                return [tuple(r) for r in conn.execute(sql, params).fetchall()]
            finally:
                conn.close()
        text = self.translate(sql)
        if self.dialect == "postgresql":
            if self._pg is None or self._pg.closed:
                self._pg = psycopg.connect(self.plain_url, autocommit=True)
            cur = self._pg.execute(text, tuple(params))
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        return asyncio.run(_mysql_fetch(self.url, [(text, tuple(params))]))[-1]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """A statement in its own transaction (autocommit)."""
        if self.dialect == "sqlite":
            conn = self.connect()
            try:
                conn.execute(sql, params)
            finally:
                conn.close()
            return
        self.query(sql, params)

    @property
    def plain_url(self) -> str:
        """The URL without tenure's own options, for the bench's own driver connections."""
        u = urlsplit(self.url)
        return urlunsplit((u.scheme, u.netloc, u.path, "", ""))

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None

    def db_now(self) -> float:
        return float(self.query(f"SELECT {DB_NOW[self.dialect]}")[0][0])


def _mysql_params(url: str, database: str | None = None) -> dict[str, Any]:
    u = urlsplit(url)
    kw: dict[str, Any] = {
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 3306,
        "user": unquote(u.username or "root"),
        "password": unquote(u.password or ""),
        "autocommit": True,
    }
    db = database if database is not None else u.path.lstrip("/")
    if db:
        kw["db"] = db
    return kw


async def _mysql_fetch(
    url: str, statements: Sequence[tuple[str, Sequence[Any]]], database: str | None = None
) -> list[list[tuple[Any, ...]]]:
    """Run statements on one fresh asyncmy connection; the rows of each."""
    import asyncmy

    conn = await asyncmy.connect(**_mysql_params(url, database))
    try:
        out = []
        async with conn.cursor() as cur:
            for sql, params in statements:
                await cur.execute(sql, tuple(params))
                rows = await cur.fetchall() if cur.description else ()
                out.append([tuple(r) for r in rows or ()])
        return out
    finally:
        conn.close()


def _with_database(url: str, database: str, *, options: bool = True) -> str:
    """``url`` naming ``database``; without ``options``, also without its query string (the
    store's own options, such as ``pool``, which a plain driver connection rejects)."""
    u = urlsplit(url)
    return urlunsplit((u.scheme, u.netloc, "/" + database, u.query if options else "", ""))


@contextmanager
def server_database(url: str, name: str) -> Iterator[BenchStore]:
    """A scratch database ``tenure_bench_<name>_<random>`` on the server ``url`` names,
    dropped afterwards (even on failure)."""
    dialect = dialect_of(url)
    db = f"tenure_bench_{re.sub(r'[^a-z0-9]', '_', name.lower())}_{secrets.token_hex(4)}"
    if dialect == "postgresql":
        admin = _with_database(url, "postgres", options=False)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
    else:
        asyncio.run(_mysql_fetch(url, [(f"CREATE DATABASE `{db}`", ())], database=""))
    store = BenchStore(url=_with_database(url, db), dialect=dialect)
    print(f"[bench] scratch database {db} on {urlsplit(url).hostname}", file=sys.stderr, flush=True)
    try:
        yield store
    finally:
        store.close()
        try:
            if dialect == "postgresql":
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            else:
                asyncio.run(_mysql_fetch(url, [(f"DROP DATABASE IF EXISTS `{db}`", ())], database=""))
        except Exception as exc:  # report, never mask the scenario's own error
            print(f"[bench] could not drop scratch database {db}: {exc}", file=sys.stderr, flush=True)


@contextmanager
def scenario_store(url: str | None, name: str) -> Iterator[BenchStore]:
    """A fresh temporary SQLite store, the given SQLite store emptied of tenure data, or
    (postgresql:// or mysql:// URL) a scratch database on that server, dropped afterwards."""
    if url is None:
        tmp = Path(tempfile.mkdtemp(prefix=f"tenure-bench-{name}-"))
        path = (tmp / "tenure.db").resolve()
        try:
            yield BenchStore(url=f"sqlite:///{path}", path=path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    if dialect_of(url) != "sqlite":
        with server_database(url, name) as server_store:
            yield server_store
        return
    path, _ = parse_sqlite_url(url)
    store = BenchStore(url=url, path=path.resolve())
    if path.exists():
        conn = store.connect()
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for t in ("tenure_runs", "tenure_tasks", "tenure_workers", "bench_commits"):
                if t in tables:
                    conn.execute(f"DELETE FROM {t}")
        finally:
            conn.close()
    yield store


async def _create_tasks(url: str, kind: str, keys: Sequence[str], every: float, batch: int) -> None:
    app = tenure.App(url)
    app.task("noop", every=1.0)(_never_called)
    app.task("fenced", every=1.0)(_never_called)
    if dialect_of(url) != "sqlite":
        await app.migrate()  # only SQLite migrates on open
    async with app:
        if batch <= 1:
            for key in keys:
                await app.add_task(kind, key, every=every)
            return
        for i in range(0, len(keys), batch):
            await asyncio.gather(*(app.add_task(kind, key, every=every) for key in keys[i : i + batch]))


async def _never_called(ctx: tenure.Context) -> None:  # pragma: no cover - registration only
    raise AssertionError("the set-up app runs no tasks")


def task_keys(n: int) -> list[str]:
    return [f"t{i:06d}" for i in range(n)]


def create_tasks(store: BenchStore, n: int, *, kind: str = "noop", every: float = 1.0) -> dict[str, Any]:
    """Create the schema (migrating), ``bench_commits`` and N tasks through the public
    ``App.add_task``, one transaction each. Returns how long that took.

    On SQLite the set-up connection uses ``synchronous=normal`` unless the URL says
    otherwise (no fsync per added task: 10,000 tasks take ~6 s instead of 10-20 s); the
    workers use the URL as given. On a server, tasks are added 50 at a time concurrently
    (``asyncio.gather`` over the store's pool)."""
    url = store.url
    batch = 1
    if store.dialect == "sqlite":
        if "synchronous=" not in url:
            url += ("&" if "?" in url else "?") + "synchronous=normal"
    else:
        batch = 50
    t = time.perf_counter()
    asyncio.run(_create_tasks(url, kind, task_keys(n), every, batch))
    elapsed = time.perf_counter() - t
    store.execute(commits_ddl(store.dialect))
    via = "App.add_task" if batch == 1 else f"App.add_task, {batch} concurrent"
    return {"tasks": n, "seconds": round(elapsed, 3), "tasks_per_s": round(n / elapsed, 1), "via": via}


# -- worker processes -------------------------------------------------------------------


@dataclass
class WorkerProc:
    id: str
    proc: subprocess.Popen[bytes]
    log: Path
    stats: Path | None
    started: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_stats(self) -> dict[str, Any] | None:
        if self.stats is None:
            return None
        try:
            data: dict[str, Any] = json.loads(self.stats.read_text())
        except (OSError, ValueError):
            return None
        return data


def worker_stats(workers: Sequence[WorkerProc]) -> dict[str, dict[str, Any]]:
    """The statistics each of ``workers`` last wrote (started with ``stats``), by worker id."""
    out = {}
    for w in workers:
        s = w.read_stats()
        if s is not None:
            out[w.id] = s
    return out


class Cluster:
    """Worker processes of one scenario, started on ``bench_worker.py``."""

    def __init__(
        self, store: BenchStore, settings: dict[str, float], *, stats: bool = False, worker_url: str | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.stats = stats
        #: The store URL the workers get (with options of tenure's), if not the store's own.
        self.worker_url = worker_url or store.url
        self.workers: list[WorkerProc] = []
        self._serial = 0
        self.logdir = Path(tempfile.mkdtemp(prefix="tenure-bench-logs-"))

    def start(self, count: int = 1) -> list[WorkerProc]:
        started = []
        for _ in range(count):
            self._serial += 1
            wid = f"bench-w{self._serial}"
            log = self.logdir / f"{wid}.log"
            stats = self.logdir / f"{wid}.json" if self.stats else None
            cmd = [
                sys.executable,
                str(WORKER_SCRIPT),
                "--store",
                self.worker_url,
                "--id",
                wid,
                "--ttl",
                str(self.settings["lease_ttl"]),
                "--heartbeat",
                str(self.settings["heartbeat"]),
                "--poll",
                str(self.settings["poll"]),
                "--timer-grid",
                str(self.settings.get("timer_grid", DEFAULTS.timer_grid)),
            ]
            if stats is not None:
                cmd += ["--stats", str(stats)]
            with log.open("wb") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            w = WorkerProc(id=wid, proc=proc, log=log, stats=stats)
            self.workers.append(w)
            started.append(w)
        return started

    def start_spread(self, count: int, *, warmup: float) -> tuple[list[WorkerProc], float | None]:
        """Start ``count`` workers, wait until they hold a fair share of the tasks (at most
        120 s), then ``warmup`` seconds and, with ``stats``, until each has written its
        statistics: where a measured window starts. Returns the workers and the seconds the
        fair share took (None: not within 120 s)."""
        workers = self.start(count)
        spread = self.wait_balanced(timeout=120)
        time.sleep(warmup)
        if self.stats:
            wait_until(lambda: len(worker_stats(workers)) == len(workers), 10)
        return workers, spread

    @property
    def live(self) -> list[WorkerProc]:
        return [w for w in self.workers if w.alive()]

    def signal(self, w: WorkerProc, sig: signal.Signals) -> float:
        """Send ``sig``; return the wall-clock time just before sending it."""
        t = time.time()
        w.proc.send_signal(sig)
        return t

    def stop_all(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every live worker, wait, SIGKILL what is left. Returns exit codes."""
        for w in self.live:
            w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w in self.workers:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        return {w.id: w.proc.returncode for w in self.workers}

    def tail_logs(self, lines: int = 5) -> dict[str, list[str]]:
        out = {}
        for w in self.workers:
            try:
                text = w.log.read_text(errors="replace").splitlines()
            except OSError:
                continue
            if text:
                out[w.id] = text[-lines:]
        return out

    def cleanup(self) -> None:
        shutil.rmtree(self.logdir, ignore_errors=True)

    def owners(self) -> dict[str | None, int]:
        rows = self.store.query("SELECT owner, count(*) FROM tenure_tasks WHERE enabled GROUP BY owner")
        return {r[0]: int(r[1]) for r in rows}

    def balanced(self, workers: Sequence[WorkerProc] | None = None) -> bool:
        """Every enabled task owned by one of ``workers`` (default: the live ones), each
        holding its fair share (N/W, give or take one)."""
        ws = list(workers) if workers is not None else self.live
        ids = {w.id for w in ws}
        owners = self.owners()
        total = sum(owners.values())
        if not ids or set(owners) - ids:
            return False
        share = total / len(ids)
        return all(math.floor(share) <= owners.get(i, 0) <= math.ceil(share) for i in ids)

    def wait_balanced(self, timeout: float, workers: Sequence[WorkerProc] | None = None) -> float | None:
        """Seconds until :meth:`balanced`, or None if it did not happen within ``timeout``."""
        t0 = time.monotonic()
        ok = wait_until(lambda: self.balanced(workers), timeout, interval=0.05)
        return round(time.monotonic() - t0, 3) if ok else None

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        self.cleanup()


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# -- /proc -------------------------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat; with
    ``tid``, of that one thread (the event loop's thread is the main one: tid = pid)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    stat = Path(path).read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # After "pid (comm) ", field 3 (state) is index 0: utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


#: Database server processes whose CPU is counted, by their /proc comm.
DB_PROCESSES = {"postgres": "postgresql", "mariadbd": "mariadb", "mysqld": "mariadb"}


def processes_cpu(label: Callable[[Path], str | None]) -> dict[int, tuple[str, float]]:
    """CPU seconds, by pid, of every process on this machine that ``label`` (given the
    process's /proc directory) names, with its name."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            name = label(Path(entry.path))
            if name is not None:
                out[int(entry.name)] = (name, cpu_seconds(int(entry.name)))
        except (OSError, ValueError):
            continue  # the process ended while we looked
    return out


def db_server_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of every database server process on this machine, by pid."""
    return processes_cpu(lambda proc: DB_PROCESSES.get(Path(proc, "comm").read_text().strip()))


def db_cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """Per server: CPU spent between the two readings (a process new since ``before``
    counts whole: it started inside the window)."""
    out: dict[str, float] = defaultdict(float)
    for pid, (server, cpu) in after.items():
        out[server] += cpu - before[pid][1] if pid in before else cpu
    return {k: round(v, 3) for k, v in out.items()}


def rss_mb(pid: int) -> float:
    """Resident set size in MB (VmRSS), from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


# -- figures -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None, "n": 0}
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {
        "min": round(ordered[0], digits),
        "median": round(median, digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
    }


@dataclass
class Target:
    """One target of the issue, the figure measured for it, and whether it is met."""

    name: str
    figure: str
    met: bool | None  # None: not measured
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"target": self.name, "figure": self.figure, "met": self.met, "note": self.note}


def machine() -> dict[str, Any]:
    """The machine, and how busy it is: other processes skew every figure here."""
    return {
        "cpus": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "tenure": tenure.__version__,
    }


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """The command that runs ``bench/<script>.py`` with ``argv`` (default: this process's
    arguments) from the repository's root, for the report."""
    return " ".join([".venv/bin/python", f"bench/{script}.py", *(argv if argv is not None else sys.argv[1:])])


@dataclass
class BenchResult:
    """What a scenario's ``run`` returns: its figures, its targets met or missed, a table
    and notes for people."""

    results: dict[str, Any]
    targets: list[Target]
    table: list[list[Any]]
    notes: list[str] = field(default_factory=list)


def bench_main(
    title: str,
    parser: Callable[[], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], BenchResult],
    argv: list[str] | None = None,
) -> None:
    """A scenario's command line: parse ``argv``, run, and :func:`report` the result
    under ``title``, with the command that
    runs it again (``bench/<title>.py``)."""
    args = parser().parse_args(argv)
    res = run(args)
    res.results["command"] = command_line(title, argv)
    report(title, res.results, res.targets, res.table, notes=res.notes, json_only=args.json_only)


def report(
    title: str,
    results: dict[str, Any],
    targets: Sequence[Target],
    table: Sequence[Sequence[Any]],
    *,
    notes: Sequence[str] = (),
    json_only: bool = False,
) -> dict[str, Any]:
    """Print the JSON document, then (unless ``json_only``) a short table."""
    doc = {"bench": title, "machine": machine(), "results": results, "targets": [t.as_json() for t in targets]}
    print(json.dumps(doc, indent=2, default=str, ensure_ascii=False))
    if not json_only:
        print()
        print_table(title, table)
        for line in notes:
            print(f"  {line}")
        print_targets(targets)
    sys.stdout.flush()
    return doc


#: A column of a scenario table: its header, and the scenario's figure under it (a key of
#: the scenario's results, or a function of them).
Column = tuple[str, str | Callable[[dict[str, Any]], Any]]

#: Columns most scenario tables share: the runs' lag, CPU per worker, the machine's load.
LAG_COLUMNS: list[Column] = [
    ("lag p50 ms", lambda s: s["lag_ms"]["p50"]),
    ("lag p99 ms", lambda s: s["lag_ms"]["p99"]),
    ("lag max ms", lambda s: s["lag_ms"]["max"]),
]
CPU_COLUMN: Column = ("CPU % (per worker)", lambda s: " / ".join(f"{v:.0f}" for v in s["cpu_pct_by_worker"].values()))
LOAD_COLUMN: Column = ("load 1m", lambda s: s["load_average_at_end"][0])


def scenario_table(scenarios: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[list[Any]]:
    """The headers of ``columns``, then a row per scenario with its figure under each."""
    return [
        [header for header, _ in columns],
        *([s[get] if isinstance(get, str) else get(s) for _, get in columns] for s in scenarios),
    ]


def print_table(title: str, rows: Sequence[Sequence[Any]]) -> None:
    if not rows:
        return
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(max(len(r) for r in cells))]
    print(f"== {title}")
    for n, r in enumerate(cells):
        print("  " + "  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(r)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def print_targets(targets: Sequence[Target]) -> None:
    if not targets:
        return
    print()
    width = max(len(t.name) for t in targets)
    for t in targets:
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[t.met]
        note = f"  ({t.note})" if t.note else ""
        print(f"  [{verdict}] {t.name.ljust(width)}  {t.figure}{note}")


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
