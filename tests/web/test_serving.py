"""``tenure dashboard`` and ``tenure worker --http`` as real processes on real sockets."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .procs import FAST, Procs, procs, wait_until

__all__ = ["procs"]  # the fixture, used by name

TOKEN = "tok-never-in-logs-3f9a"  # noqa: S105 - a test token


def one_error_line(err: str) -> str:
    assert err.startswith("tenure: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def runs_ok(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "tenure_runs_total" and s.labels.get("outcome") == "ok"
    )


@contextmanager
def taken_port() -> Iterator[int]:
    """A local port something listens on until the block ends."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.slow
def test_dashboard_serves_on_loopback_quietly_and_stops_on_sigterm(procs: Procs) -> None:
    dash = procs.start(
        "dashboard", "dashboard", "--port", "0", "--log-format", "json", env={"TENURE_ADMIN_TOKEN": TOKEN}
    )
    url = dash.wait_for_url()
    assert url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=url, timeout=5) as http:
        assert http.get("/api/status").json()["actions"] is True
        assert http.get("/").status_code == 200
        assert http.post("/api/workers/w/drain", headers={"Authorization": "Bearer wrong-" + TOKEN}).status_code == 403
        assert http.post("/api/workers/w/drain", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
        assert "tenure_store_up 1.0" in http.get("/metrics").text
        assert http.get("/api/status", headers={"Host": "rebound.example"}).status_code == 400
    assert dash.stop() == 0
    log = dash.log()
    assert "NOT a loopback" not in log
    assert TOKEN not in log, "the admin token reached the log"
    records = dash.records()
    assert records, log
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert any(r["message"] == "dashboard stopped" for r in records)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "api/status", timeout=2)


@pytest.mark.slow
def test_dashboard_warns_loudly_off_loopback(procs: Procs) -> None:
    dash = procs.start("dashboard", "dashboard", "--host", "0.0.0.0", "--port", "0", "--log-format", "json")  # noqa: S104
    url = dash.wait_for_url()
    port = int(url.rsplit(":", 1)[1].strip("/"))
    warnings = [r for r in dash.records() if r["level"] == "WARNING" and "NOT a loopback" in r["message"]]
    assert warnings, dash.log()
    assert "--protect-reads" in warnings[0]["message"]
    # It serves anyway (the operator asked for it); this test talks to it over loopback only.
    assert httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=5).status_code == 200
    assert dash.stop() == 0


@pytest.mark.slow
def test_dashboard_human_logs_by_default(procs: Procs) -> None:
    dash = procs.start("dashboard", "dashboard", "--port", "0", env={"TENURE_LOG_FORMAT": "json"})
    dash.wait_for_url()  # the environment chose JSON
    assert dash.stop() == 0
    human = procs.start("human", "dashboard", "--port", "0")
    wait_until(lambda: "INFO tenure.web dashboard on http://127.0.0.1:" in human.log(), within=20, what="a human line")
    assert human.stop() == 0


@pytest.mark.slow
def test_dashboard_refusals(procs: Procs) -> None:
    with taken_port() as port:
        r = procs.run("dashboard", "--port", str(port))
    assert r.returncode == 1, r
    assert "cannot listen on 127.0.0.1" in one_error_line(r.stderr)
    r = procs.run("dashboard", "--port", "70000")
    assert r.returncode == 2
    assert "--port" in one_error_line(r.stderr)
    r = procs.run("dashboard", "--host", "no-such-host.invalid", "--port", "0")
    assert r.returncode == 1
    assert "cannot listen on no-such-host.invalid" in one_error_line(r.stderr)
    r = procs.run("dashboard", "--port", "0", env={"TENURE_LOG_FORMAT": "xml"})
    assert r.returncode == 2
    assert "TENURE_LOG_FORMAT" in one_error_line(r.stderr)
    r = procs.run("dashboard", "--port", "0", env={"TENURE_PROTECT_READS": "maybe"})
    assert r.returncode == 2
    assert "TENURE_PROTECT_READS" in one_error_line(r.stderr)
    r = procs.run("dashboard", "--port", "0", "--store", f"sqlite:///{procs.folder / 'missing.db'}")
    assert r.returncode == 1
    assert "no SQLite store" in one_error_line(r.stderr)
    assert not (procs.folder / "missing.db").exists()


@pytest.mark.slow
def test_dashboard_protects_reads_by_option(procs: Procs) -> None:
    dash = procs.start(
        "dashboard",
        "dashboard",
        "--port",
        "0",
        "--log-format",
        "json",
        env={"TENURE_PROTECT_READS": "yes", "TENURE_ADMIN_TOKEN": TOKEN},
    )
    url = dash.wait_for_url()
    with httpx.Client(base_url=url, timeout=5) as http:
        assert http.get("/api/tasks").status_code == 401
        assert http.get("/metrics").status_code == 401
        assert http.get("/api/tasks", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert dash.stop() == 0
    # The flag wins over the environment.
    dash = procs.start(
        "open",
        "dashboard",
        "--port",
        "0",
        "--no-protect-reads",
        "--log-format",
        "json",
        env={"TENURE_PROTECT_READS": "1"},
    )
    assert httpx.get(dash.wait_for_url() + "api/tasks", timeout=5).status_code == 200
    assert dash.stop() == 0


@pytest.mark.slow
def test_worker_serves_its_metrics_and_stops_them_with_it(procs: Procs) -> None:
    worker = procs.worker("w-http", "--http", "127.0.0.1:0")
    url = worker.wait_for_url()
    wait_until(lambda: procs.run("tasks", "add", "dispatch", "lisbon").returncode == 0, within=20, what="the kind")
    assert procs.run("tasks", "add", "dispatch", "porto").returncode == 0
    with httpx.Client(base_url=url, timeout=5) as http:
        first = runs_ok(http.get("/metrics").text)
        wait_until(lambda: runs_ok(http.get("/metrics").text) >= first + 4, within=20, what="runs to be counted")
        status = http.get("/api/status").json()
        assert status["served_by"] == "w-http"
        assert status["actions"] is False  # no TENURE_ADMIN_TOKEN
        r = http.post("/api/tasks/dispatch/lisbon/disable", headers={"Authorization": "Bearer x"})
        assert r.status_code == 403
        assert "TENURE_ADMIN_TOKEN" in r.json()["error"]["message"]
    assert worker.stop() == 0
    messages = [r["message"] for r in worker.records()]
    assert any(m.startswith("left the cluster") for m in messages), messages
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "metrics", timeout=2)
    # A worker's records carry its id.
    assert all(r.get("worker") == "w-http" for r in worker.records() if r["logger"] == "tenure.worker")


@pytest.mark.slow
def test_worker_http_address_in_use_fails_before_joining(procs: Procs) -> None:
    with taken_port() as port:
        r = procs.run("worker", "webapp:app", "--id", "w-x", "--http", f"127.0.0.1:{port}")
    assert r.returncode == 1, r
    assert "cannot listen on 127.0.0.1" in one_error_line(r.stderr)
    workers = json.loads(procs.run("workers", "list", "--json").stdout)
    assert workers == []


@pytest.mark.slow
def test_worker_sigint_also_stops_http(procs: Procs) -> None:
    worker = procs.worker("w-int", "--http", "127.0.0.1:0")
    url = worker.wait_for_url()
    assert httpx.get(url + "api/workers", timeout=5).status_code == 200
    worker.signal(signal.SIGINT)
    assert worker.proc.wait(15) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "api/workers", timeout=2)


@pytest.mark.slow
def test_a_client_that_disconnects_mid_body_is_no_error_in_the_log(procs: Procs) -> None:
    """A client that went away while sending a body (a timeout, a killed curl) made the
    server log a traceback at ERROR for each aborted request."""
    dash = procs.start(
        "dashboard", "dashboard", "--port", "0", "--log-format", "json", env={"TENURE_ADMIN_TOKEN": TOKEN}
    )
    url = dash.wait_for_url()
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b'Content-Length: 1000\r\n\r\n{"kind":'
        )
    with httpx.Client(base_url=url, timeout=5) as http:  # served after the aborted one
        assert http.get("/api/status").status_code == 200
    assert dash.stop() == 0
    log = dash.log()
    assert "Traceback" not in log, log
    assert [r for r in dash.records() if r["level"] in ("ERROR", "CRITICAL")] == [], log


STUCK_APP = """\
import pathlib, time
import tenure

app = tenure.App()

@app.task("stuck", every=0.5, timeout=60)
def stuck(ctx: tenure.Context) -> None:
    pathlib.Path("started").touch()
    time.sleep(600)  # a call without a timeout
"""


@pytest.mark.slow
def test_a_worker_exits_past_a_sync_handler_stuck_in_its_thread(procs: Procs) -> None:
    """A thread cannot be stopped, and Python joins the handlers' threads at exit: a worker
    whose sync handler was stuck released its tasks on SIGTERM and then never exited (a
    second SIGTERM killed it, exit -15)."""
    (procs.folder / "stuckapp.py").write_text(STUCK_APP)
    worker = procs.start("w-stuck", "worker", "stuckapp:app", "--id", "w-stuck", "--log-format", "json", *FAST)
    wait_until(lambda: procs.run("tasks", "add", "stuck", "a").returncode == 0, within=20, what="the kind")
    wait_until(lambda: (procs.folder / "started").exists() or None, within=20, what="the handler to start")
    assert worker.stop(within=30) == 0
    messages = [r["message"] for r in worker.records()]
    assert any("still running after the worker left; exiting without them" in m for m in messages), messages
    assert any(m.startswith("left the cluster") for m in messages), messages


DEAF_APP = """\
import asyncio, pathlib
import tenure

app = tenure.App()

@app.task("deaf", every=0.5, timeout=60)
async def deaf(ctx: tenure.Context) -> None:
    pathlib.Path("started").touch()
    while True:  # a retry loop whose bare except also swallows cancellation
        try:
            await asyncio.sleep(600)
        except:  # noqa: E722
            pass
"""


@pytest.mark.slow
def test_a_worker_exits_past_an_async_handler_that_swallows_its_cancellation(procs: Procs) -> None:
    """The runs lived in a task group, whose exit waits for every run: a handler that
    catches every cancellation held the stop forever (its tasks released, the process
    never gone; a second SIGTERM changed nothing). Now the worker leaves without it, says
    which run, and exits 0."""
    (procs.folder / "deafapp.py").write_text(DEAF_APP)
    worker = procs.start("w-deaf", "worker", "deafapp:app", "--id", "w-deaf", "--log-format", "json", *FAST)
    wait_until(lambda: procs.run("tasks", "add", "deaf", "a").returncode == 0, within=20, what="the kind")
    wait_until(lambda: (procs.folder / "started").exists() or None, within=20, what="the handler to start")
    assert worker.stop(within=30) == 0
    records = worker.records()
    messages = [r["message"] for r in records]
    assert any(r["message"].startswith("run did not end") and r.get("key") == "a" for r in records), records
    assert any("still going after being cancelled; exiting without them" in m for m in messages), messages
    assert any(m.startswith("left the cluster") for m in messages), messages


#: DEAF_APP, and a bug in tenure's own code (injected here: the run recorder fails for the
#: task "bug") that stops the worker while the deaf run is going.
FAILING_DEAF_APP = (
    DEAF_APP
    + """
from tenure.worker import recorder

_record = recorder.RunRecorder.record

def record(self, ot, *args, **kwargs):
    if ot.task.key == "bug":
        raise RuntimeError("injected bug in the run recorder")
    return _record(self, ot, *args, **kwargs)

recorder.RunRecorder.record = record

@app.task("buggy", every=0.5)
async def buggy(ctx: tenure.Context) -> None:
    pass
"""
)


@pytest.mark.slow
def test_a_worker_that_fails_past_a_run_left_behind_still_says_why(procs: Procs) -> None:
    """Exiting without a run left behind came before the command line could report why
    the worker failed: it exited 1 with nothing on stderr but the log. Now its error is
    reported as it would have been (here a traceback, the error not being tenure's)."""
    (procs.folder / "failapp.py").write_text(FAILING_DEAF_APP)
    worker = procs.start("w-fail", "worker", "failapp:app", "--id", "w-fail", "--log-format", "json", *FAST)
    wait_until(lambda: procs.run("tasks", "add", "deaf", "a").returncode == 0, within=20, what="the kind")
    wait_until(lambda: (procs.folder / "started").exists() or None, within=20, what="the handler to start")
    assert procs.run("tasks", "add", "buggy", "bug").returncode == 0
    assert worker.proc.wait(30) == 1
    messages = [r["message"] for r in worker.records()]
    assert any("still going after being cancelled; exiting without them" in m for m in messages), messages
    # The log's CRITICAL record holds the traceback as a JSON field; this is the report.
    report = "\n".join(line for line in worker.log().splitlines() if not line.startswith("{"))
    assert "RuntimeError: injected bug in the run recorder" in report, worker.log()
