"""The demo's terminal view: a live screen on a terminal, plain lines elsewhere.

On a terminal (rich ``Live``): cities with their owner and term, orders waiting, en route
and delivered, workers and their state, and the latest events (faults, takeovers, refused
stale commits). Elsewhere (a pipe, a log, a test): one line per event as it happens and
the tables once at the end.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

STYLES = {
    "kill": "bold red",
    "pause": "bold yellow",
    "city": "cyan",
    "takeover": "magenta",
    "refused": "bold green",
    "info": "dim",
    "warning": "bold red",
}


@dataclass(frozen=True, kw_only=True)
class CityRow:
    name: str
    enabled: bool
    owner: str | None
    owner_live: bool
    term: int
    waiting: int
    en_route: int
    delivered: int
    free: int
    couriers: int
    since_dispatch: float | None


@dataclass(frozen=True, kw_only=True)
class WorkerRow:
    name: str
    pid: int
    state: str
    lease: str
    cities: int


@dataclass(frozen=True, kw_only=True)
class Frame:
    elapsed: float
    duration: float
    cities: list[CityRow]
    workers: list[WorkerRow]
    orders: int
    assigned: int
    delivered: int
    commits: int
    refused: int
    faults: int


class View:
    def __init__(self, console: Console, *, title: str, live: bool | None = None) -> None:
        self.console = console
        self.title = title
        self.live_mode = console.is_terminal if live is None else live
        self.events: deque[tuple[float, str, str]] = deque(maxlen=12)
        self.frame: Frame | None = None
        self._live: Live | None = None

    def __enter__(self) -> View:
        if self.live_mode:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.start()
        else:
            self.console.print(Text(self.title, style="bold"), soft_wrap=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None
        elif self.frame is not None:
            self.console.print(self._tables(self.frame))

    def event(self, elapsed: float, text: str, kind: str = "info") -> None:
        self.events.append((elapsed, text, kind))
        if self._live is not None:
            self._live.update(self._render())
        else:
            line = Text(f"{elapsed:6.1f}s  ", style="dim")
            line.append(text, style=STYLES.get(kind, ""))
            self.console.print(line, soft_wrap=True)

    def show(self, frame: Frame) -> None:
        self.frame = frame
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> RenderableType:
        parts: list[RenderableType] = [Text(self.title, style="bold")]
        if self.frame is not None:
            parts.append(self._tables(self.frame))
        events = Text()
        for i, (at, text, kind) in enumerate(self.events):
            if i:
                events.append("\n")
            events.append(f"{at:6.1f}s  ", style="dim")
            events.append(text, style=STYLES.get(kind, ""))
        parts.append(
            Panel(events or Text("waiting for the first fault…", style="dim"), title="events", box=box.ROUNDED)
        )
        return Group(*parts)

    def _tables(self, f: Frame) -> RenderableType:
        cities = Table(box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
        for column in ("city", "owner", "term", "waiting", "en route", "delivered", "couriers free", "last dispatch"):
            cities.add_column(column, justify="left" if column in ("city", "owner") else "right", no_wrap=True)
        for c in f.cities:
            if not c.enabled:
                owner = Text("disabled", style="dim")
            elif c.owner is None:
                owner = Text("-", style="yellow")
            elif not c.owner_live:
                owner = Text(f"{c.owner} (lease expired)", style="yellow")
            else:
                owner = Text(c.owner)
            since = "-" if c.since_dispatch is None else f"{c.since_dispatch:.1f}s ago"
            cities.add_row(
                Text(c.name, style="bold" if c.enabled else "dim"),
                owner,
                str(c.term),
                str(c.waiting),
                str(c.en_route),
                str(c.delivered),
                f"{c.free}/{c.couriers}",
                since,
            )
        workers = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("worker", "pid", "process", "lease", "cities"):
            workers.add_column(column, no_wrap=True)
        for w in f.workers:
            style = {"paused": "yellow", "killed": "red", "stopped": "dim"}.get(w.state, "")
            workers.add_row(w.name, str(w.pid), Text(w.state, style=style), w.lease, str(w.cities))
        summary = Text(
            f"{f.elapsed:.0f}s of {f.duration:.0f}s   orders {f.orders}, assigned {f.assigned}, "
            f"delivered {f.delivered}   dispatch commits {f.commits}   faults {f.faults}   "
        )
        summary.append(f"stale commits refused {f.refused}", style="bold green" if f.refused else "")
        grid = Table.grid(padding=(0, 4))
        grid.add_row(cities, workers)
        return Group(grid, summary)
