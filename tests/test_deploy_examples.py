"""examples/deploy/: the systemd unit and the Kubernetes manifest parse, run a command
tenure accepts, and wait long enough for a graceful stop with the settings they set."""

from __future__ import annotations

import shlex
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from tenure.cli.parser import build_parser
from tenure.config import ENV_NAMES, STOP_OVERHEAD, Settings
from tenure.web.probes import STORE_TIMEOUT, blocked_limit
from tenure.worker import LOOPS_STOP_WITHIN, SIDECAR_STOP_WITHIN

DEPLOY = Path(__file__).resolve().parents[1] / "examples" / "deploy"
#: Exit status of a usage error (tenure.cli): restarting would fail the same way.
USAGE_ERROR = 2


def systemd_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections, each key with every value it was given (``Environment=``
    may repeat). Specifiers are filled in as for instance ``1`` on host ``host``."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), raw
            section = line[1:-1]
            continue
        assert section is not None, raw
        assert "=" in line, raw
        key, _, value = line.partition("=")
        sections[section][key.strip()].append(value.strip().replace("%i", "1").replace("%H", "host"))
    return sections


def worker_args(argv: list[str]) -> Any:
    assert Path(argv[0]).name == "tenure", argv
    args = build_parser().parse_args(argv[1:])
    assert args.command == "worker", argv
    return args


def test_systemd_unit_runs_a_worker_and_waits_for_its_graceful_stop() -> None:
    unit = systemd_unit((DEPLOY / "tenure-worker.service").read_text())
    service = unit["Service"]
    args = worker_args(shlex.split(service["ExecStart"][0]))
    assert args.http is not None
    assert args.http[0] == "127.0.0.1"
    env = dict(e.split("=", 1) for e in service["Environment"])
    assert set(env) <= {*ENV_NAMES.values(), "TENURE_LOG_FORMAT", "TENURE_STORE"}, env
    # Secrets stay out of the unit (EnvironmentFile holds them).
    assert "TENURE_STORE" not in env
    assert "TENURE_ADMIN_TOKEN" not in env
    settings = Settings.from_env(env)
    assert service["KillSignal"] == ["SIGTERM"]
    assert float(service["TimeoutStopSec"][0]) >= settings.grace + STOP_OVERHEAD
    assert service["Restart"] == ["on-failure"]
    assert str(USAGE_ERROR) in service["RestartPreventExitStatus"][0].split()


def test_kubernetes_manifest_probes_the_worker_and_waits_for_its_graceful_stop() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = worker_args(container["command"])
    host, port = args.http
    assert host == "0.0.0.0"  # noqa: S104 - the kubelet probes the pod's address
    assert args.protect_reads is True  # reachable from the pod network: reads need the token
    assert [p["containerPort"] for p in container["ports"]] == [port]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    from_secrets = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert from_secrets == {"TENURE_STORE", "TENURE_ADMIN_TOKEN"}
    settings = Settings.from_env(env)
    assert pod["terminationGracePeriodSeconds"] >= settings.grace + STOP_OVERHEAD
    assert "lifecycle" not in container  # no preStop sleep: SIGTERM hands tasks over at once

    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert (live["httpGet"]["path"], live["httpGet"]["port"]) == ("/healthz", port)
    assert (ready["httpGet"]["path"], ready["httpGet"]["port"]) == ("/readyz", port)
    assert ready["timeoutSeconds"] > STORE_TIMEOUT  # /readyz may wait that long for the store
    # A restart only after the loop was blocked past the lease for several probes in a row.
    assert live["periodSeconds"] * live["failureThreshold"] >= blocked_limit(settings)


def test_stop_overhead_covers_the_bounded_steps_of_a_stop() -> None:
    # After grace: cancelled runs get 2 s, the poll in progress 2 s, the background loops
    # and the HTTP interface their own bounds; leave() is one store call.
    assert STOP_OVERHEAD >= 2 + 2 + LOOPS_STOP_WITHIN + SIDECAR_STOP_WITHIN + 5
