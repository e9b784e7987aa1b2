"""bench/load.py, bench/fleet.py, bench/release.py and others run end to end, tiny, and report
figures of the right shape; load.py and fleet.py refuse bad options by name.

Benches are not tests: nothing here asserts speed. What is checked is that a smoke run
(few tasks, few seconds, real worker processes) produces one JSON document whose
figures are internally consistent, so the benches cannot rot unnoticed between the runs
that take real figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.stores import require_store

BENCH = Path(__file__).resolve().parent.parent / "bench"
PG = os.environ.get("TENURE_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/postgres")


def run_bench(title: str, *args: str, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``bench/<title>.py`` with ``args``; with ``tmp``, its temporary files (load.py
    keeps the workers' logs in a temporary directory) go to the test's."""
    env = {**os.environ, "TMPDIR": str(tmp)} if tmp is not None else None
    return subprocess.run(
        [sys.executable, str(BENCH / f"{title}.py"), *args],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        env=env,
    )


def bench_doc(title: str, *args: str, tmp: Path | None = None) -> dict[str, Any]:
    """The JSON document of a run of ``bench/<title>.py`` that succeeded, titled so."""
    done = run_bench(title, *args, tmp=tmp)
    assert done.returncode == 0, done.stderr[-2000:]
    doc: dict[str, Any] = json.loads(done.stdout)
    assert doc["bench"] == title
    return doc


def refusal(title: str, *args: str) -> str:
    """What ``bench/<title>.py`` says on stderr when it refuses ``args`` (failing, printing nothing)."""
    done = run_bench(title, *args)
    assert done.returncode != 0
    assert done.stdout == ""
    return done.stderr


@pytest.mark.slow
def test_smoke_run_reports_every_system_with_consistent_figures(tmp_path: Path) -> None:
    require_store("postgresql", tmp_path)
    n = 12
    doc = bench_doc(
        "load", "--store", "sqlite", "--app-db", PG, "--n", str(n), "--workers", "2",
        "--duration", "2", "--warmup", "3", "--json-only", tmp=tmp_path,
    )  # fmt: skip
    assert doc["machine"]["load_average_1_5_15"]
    scenarios: list[dict[str, Any]] = doc["results"]["scenarios"]
    assert [s["system"] for s in scenarios] == ["floor", "plain", "fenced"]
    for s in scenarios:
        assert s["tasks"] == n
        assert s["periods_in_window"] == 2
        assert s["runs_expected"] == n * 2
        assert 0 <= s["runs_delivered"] <= s["runs_expected"]
        assert s["runs_delivered"] <= s["rows_in_window"]
        assert 0.0 <= s["delivered_pct"] <= 100.0
        assert 0 <= s["keys_never_run"] <= n
        gap = s["gap_s"]
        assert 0.0 < gap["p50"] <= gap["p99"] <= gap["max"] <= s["window_s"] + 0.001
        assert s["cpu_s"]["workers"] >= 0.0
        assert s["cpu_s"]["db"] >= 0.0
        assert s["exit_codes"], s
        assert all(code == 0 for code in s["exit_codes"].values()), s["exit_codes"]
        assert s["log_lines"]["tracebacks"] == 0
    floor, plain, fenced = scenarios
    assert floor["store"] is None
    assert "tenure_outcomes_started_in_window" not in floor
    assert plain["store"] == fenced["store"] == "sqlite"
    assert plain["app_table_on"] == "postgresql"
    assert Path(plain["logs_dir"]).is_relative_to(tmp_path)
    assert fenced["app_table_on"] == "sqlite"  # the fenced insert lives in tenure's store
    # SQLite works inside the workers: the fenced scenario's database CPU is theirs.
    assert fenced["cpu_s"]["db_servers_counted"] == []
    assert floor["cpu_s"]["db_servers_counted"] == plain["cpu_s"]["db_servers_counted"] == ["postgresql"]
    # PostgreSQL's backends by the database they serve: here only the application table's.
    for s in (floor, plain):
        assert list(s["postgres_backends_cpu_s_per_1000_runs"]) == ["application"], s
        assert s["postgres_backends_cpu_s_per_1000_runs"]["application"] >= 0.0
    assert fenced["postgres_backends_cpu_s_per_1000_runs"] == {}
    # Every tenure run that started in the window is accounted for by its outcome.
    assert sum(plain["tenure_outcomes_started_in_window"].values()) > 0
    assert sum(plain["tasks_by_owner_at_end"].values()) == n


@pytest.mark.slow
def test_rounds_take_turns_and_figures_are_their_medians(tmp_path: Path) -> None:
    require_store("postgresql", tmp_path)
    doc = bench_doc(
        "load", "--store", "sqlite", "--app-db", PG, "--n", "1000", "--workers", "2", "--handlers", "floor,plain",
        "--duration", "2", "--warmup", "2", "--rounds", "2", "--json-only", tmp=tmp_path,
    )  # fmt: skip
    results = doc["results"]
    assert results["rounds"] == 2
    scenarios = results["scenarios"]
    # In turn, so that each round's tenure is compared with the floor measured just before.
    assert [(s["round"], s["system"]) for s in scenarios] == [(1, "floor"), (1, "plain"), (2, "floor"), (2, "plain")]
    for s in scenarios:
        floor = scenarios[0] if s["round"] == 1 else scenarios[2]
        assert s["delivered_vs_floor"] == round(s["delivered_pct"] / floor["delivered_pct"], 3)
    floor_summary, plain_summary = results["summaries"]
    assert [(m["system"], m["rounds"]) for m in (floor_summary, plain_summary)] == [("floor", 2), ("plain", 2)]
    cpu = [s["cpu_s_per_1000_runs"]["total"] for s in scenarios if s["system"] == "plain"]
    total = plain_summary["cpu_s_per_1000_runs"]["total"]
    assert (total["min"], total["max"], total["n"]) == (min(cpu), max(cpu), 2)
    assert total["median"] == round(sum(cpu) / 2, 3)
    # The CPU target compares each round's plain with that round's floor, and says so.
    (target,) = [t for t in doc["targets"] if t["target"].startswith("plain CPU")]
    over = sorted(p["cpu_s_per_1000_runs"]["total"] - f["cpu_s_per_1000_runs"]["total"]
                  for f, p in (scenarios[0:2], scenarios[2:4]))  # fmt: skip
    median = round(sum(over) / 2, 6)  # as the bench rounds it
    assert target["figure"].startswith(f"median {median:+.3f} s of 2 rounds")
    assert target["met"] == (median <= 0.08)


@pytest.mark.slow
def test_the_paced_floor_runs_every_key_without_tenure(tmp_path: Path) -> None:
    """``paced``, asked for by name: a bare loop like the floor (no store of tenure's, its
    table on PostgreSQL), every key run every period on the grid it was given, and the
    processes stop cleanly."""
    require_store("postgresql", tmp_path)
    n = 40
    doc = bench_doc(
        "load", "--app-db", PG, "--n", str(n), "--workers", "2", "--handlers", "paced", "--timer-grid", "0.05",
        "--duration", "2", "--warmup", "3", "--json-only", tmp=tmp_path,
    )  # fmt: skip
    assert doc["results"]["timer_grid_s"] == 0.05
    (paced,) = doc["results"]["scenarios"]
    assert paced["system"] == "paced"
    assert paced["store"] is None
    assert "tenure_outcomes_started_in_window" not in paced
    assert paced["keys_never_run"] == 0
    assert paced["runs_delivered"] == n * paced["periods_in_window"]
    assert all(code == 0 for code in paced["exit_codes"].values()), paced["exit_codes"]
    assert paced["log_lines"]["tracebacks"] == 0


def test_unknown_system_is_refused_by_name() -> None:
    assert "--handlers 'plain,bogus'" in refusal("load", "--handlers", "plain,bogus", "--n", "10")


def test_no_rounds_is_refused_by_name() -> None:
    assert "--rounds 0" in refusal("load", "--rounds", "0", "--n", "10")


def test_a_timer_grid_tenure_refuses_is_refused_by_name() -> None:
    assert "--timer-grid: timer_grid" in refusal("load", "--timer-grid", "0", "--n", "10")


@pytest.mark.slow
def test_fleet_smoke_run_reports_every_phase_with_consistent_figures(tmp_path: Path) -> None:
    require_store("postgresql", tmp_path)
    r: dict[str, Any] = bench_doc(
        "fleet", "--store", PG, "--workers", "2", "--tasks", "200", "--every", "1",
        "--kill", "1", "--join", "1", "--window", "2", "--ttl", "2", "--heartbeat", "0.5", "--poll", "0.5",
        "--timeout", "30", "--json-only",
    )["results"]  # fmt: skip
    # Every task is claimed at least once at the start; the killed worker's tasks all move.
    assert r["start"]["registered"] == 2
    assert r["start"]["distinct_tasks_moved"] == 200
    assert r["start"]["tasks_moved"] >= r["start"]["moves_minimum"] == 200
    # Each worker's claims, timed from the last registration: after it registered.
    claims = r["start"]["claims_after_last_registration"]
    assert sorted(w[0] for w in claims["workers"]) == ["bench-w1", "bench-w2"]
    assert sum(w[5] for w in claims["workers"]) >= 200
    for _, registered, began, returned, count, _ in claims["workers"]:
        assert registered <= 0
        assert registered <= began <= returned
        assert count >= 1
    kill = r["kill"]
    assert 0 < kill["tasks_held"] < 200
    assert kill["moves_minimum"] == kill["tasks_held"] <= kill["tasks_moved"]
    assert kill["all_owned_elsewhere_s"] is not None
    assert kill["tasks_run_elsewhere"] == kill["tasks_held"]
    assert r["join"]["joined"] == 1
    for name in ("steady", "steady_after"):
        w = r[name]
        assert w["workers"] == 2
        assert 0 <= w["slots_delivered"] <= w["slots_expected"]
        assert w["coordination_calls_per_s"] > 0
        assert w["db_transactions_per_s"] > 0
        assert w["cluster_connections"] >= 2 * 2  # the pool and the session (liveness, LISTEN, lease) per worker
    assert r["exit_codes"]["bench-w1"] == -9  # the killed one
    assert all(code == 0 for wid, code in r["exit_codes"].items() if wid != "bench-w1")


def test_fleet_refuses_killing_every_worker_by_name() -> None:
    assert "--kill 4" in refusal("fleet", "--workers", "4", "--kill", "4")


@pytest.mark.slow
def test_release_bench_reports_a_release_and_a_dead_claim(tmp_path: Path) -> None:
    """bench/release.py, tiny: one release of all the tasks, and (on a server) a claim
    that takes every task of the dead worker whose row another transaction holds."""
    require_store("postgresql", tmp_path)
    doc = bench_doc("release", "--tasks", "5", "--repeats", "2", "--stores", f"sqlite,{PG}", "--json", tmp=tmp_path)
    for store in ("sqlite", "postgresql"):
        release = doc["results"][store]["release"]
        assert release["tasks"] == 5
        assert len(release["all_ms"]) == 2
        assert release["median_ms"] > 0
    assert "dead claim" not in doc["results"]["sqlite"]
    assert doc["results"]["postgresql"]["dead claim"]["taken"] == 5


@pytest.mark.slow
def test_claims_bench_claims_every_task_then_a_dead_workers(tmp_path: Path) -> None:
    """bench/claims.py, tiny: three workers claim 30 tasks in chunks of 4, then one of
    them dies and the first takes its tasks."""
    require_store("postgresql", tmp_path)
    doc = bench_doc(
        "claims", "--tasks", "30", "--chunk", "4", "--workers", "3", "--stores", f"sqlite,{PG}", "--json", tmp=tmp_path
    )
    for store in ("sqlite", "postgresql"):
        start, dead = doc["results"][store]["start"], doc["results"][store]["after_a_death"]
        assert start["tasks"] == 30
        assert start["claims"] == 8  # ceil(30 / 4)
        assert start["held_by_o0"] > 0
        assert dead["tasks"] == start["held_by_o0"]


@pytest.mark.slow
def test_fence_cost_bench_commits_every_variant(tmp_path: Path) -> None:
    """bench/fence_cost.py, tiny: every transaction of each variant inserted its row (the
    fenced ones were accepted), and each round's figures were taken."""
    require_store("postgresql", tmp_path)
    doc = bench_doc("fence_cost", "--url", PG, "--count", "30", "--rounds", "2", "--json-only")
    res = doc["results"]
    assert res["rows"] == {v: 2 * (30 + 200) for v in ("plain", "transaction", "last_check", "protocol", "tenure")}
    for name, v in res["variants"].items():
        assert len(v["rounds"]) == 2, name
        assert all(r["client_us"] > 0 for r in v["rounds"]), (name, v)
    assert res["variants"]["plain"]["vs_plain_rounds"] == [1.0, 1.0]


@pytest.mark.slow
def test_flush_cost_bench_reports_each_part(tmp_path: Path) -> None:
    """bench/flush_cost.py, tiny: each part's flushes counted, and what they wrote."""
    require_store("postgresql", tmp_path)
    doc = bench_doc(
        "flush_cost", "--url", PG, "--tasks", "40", "--workers", "2", "--batches", "4",
        "--warmup", "2", "--interval", "0", "--json-only",
    )  # fmt: skip
    parts = {s["part"]: s for s in doc["results"]["scenarios"]}
    assert list(parts) == ["both", "runs", "slots"]
    for s in parts.values():
        assert s["runs"] == 4 * 20
        assert s["db_backend_cpu_s_per_1000"] >= 0.0
        assert s["wal_bytes_per_run"] > 0
        # The tables' counters are the statistics collector's, which lag: only their shape.
        assert set(s["tables"]) == {"tenure_runs", "tenure_tasks"}
