"""Network faults on one worker's database traffic, for the fault suite and the soak.

**Cut off** (:class:`Isolated`): the worker runs in a network namespace of its own
(``ip netns exec``), joined to the host by a veth pair. The database servers listen on
loopback only, so a ``socat`` relay on the host end of the pair forwards the worker's
connections to the server. Cutting the worker off is ``ip link set <host end> down``:
the kernel drops every packet both ways, silently, as a pulled cable or a dead switch
would. Nothing answers, nothing is reset; the worker's sockets just stop hearing back,
and the other workers, outside the namespace, are untouched. Healing puts the link up;
the connections that survived resume where they were (TCP retransmits), the others fail.

**Latency and jitter** (:class:`DelayProxy`): this machine's kernel is built without
``sch_netem`` (``CONFIG_NET_SCH_NETEM is not set``), so ``tc netem`` is not available,
and Toxiproxy, the well-kept fault proxy, ships only as a Go binary from GitHub releases,
which this machine cannot reach (it is on neither PyPI, npm nor Debian). The delay comes
from ``delay_proxy.py`` instead: a small relay process that holds each chunk it forwards
for ``delay ± jitter`` seconds while keeping the byte order of each direction, which is
what netem's delay does to a TCP stream. It is the only hand-written piece here; the
partition above is the kernel's own.

Both need root (network namespaces) and are for servers: an embedded SQLite store has no
network to cut.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PROXY = Path(__file__).with_name("delay_proxy.py")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


def with_address(url: str, host: str, port: int) -> str:
    """``url`` with its host and port replaced (user, database and options kept)."""
    p = urlsplit(url)
    user = p.netloc.rpartition("@")[0]
    netloc = f"{user}@{host}:{port}" if user else f"{host}:{port}"
    return urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is not installed (apt-get install -y {'iproute2' if tool == 'ip' else tool})")
    return path


class Isolated:
    """A network namespace for one worker, whose only way to the database is a veth pair
    that :meth:`cut` takes down and :meth:`heal` brings back."""

    def __init__(self, url: str) -> None:
        ip = self._ip = _require("ip")
        socat = _require("socat")
        # A number of our own for the names and the /30 subnet; a namespace left by a
        # killed earlier run under the same name is removed first.
        n = random.Random(os.getpid() * 1_000_003 + id(self)).randrange(16384)
        self.ns = f"tenure-cut-{n}"
        self.host_if, self.worker_if = f"tnh{n}", f"tnw{n}"
        base = f"10.{200 + n // 4096}.{(n // 64) % 64}.{(n % 64) * 4}"
        prefix = base.rpartition(".")[0]
        last = int(base.rpartition(".")[2])
        self.host_ip, self.worker_ip = f"{prefix}.{last + 1}", f"{prefix}.{last + 2}"
        self._relay: subprocess.Popen[bytes] | None = None
        self.close()
        _run(ip, "netns", "add", self.ns)
        _run(ip, "link", "add", self.host_if, "type", "veth", "peer", "name", self.worker_if)
        _run(ip, "link", "set", self.worker_if, "netns", self.ns)
        _run(ip, "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _run(ip, "link", "set", self.host_if, "up")
        inside = (ip, "netns", "exec", self.ns, ip)
        _run(*inside, "addr", "add", f"{self.worker_ip}/30", "dev", self.worker_if)
        _run(*inside, "link", "set", self.worker_if, "up")
        _run(*inside, "link", "set", "lo", "up")
        target = urlsplit(url)
        port = _free_port(self.host_ip)
        self._relay = subprocess.Popen(
            [
                socat,
                f"TCP-LISTEN:{port},bind={self.host_ip},reuseaddr,fork",
                f"TCP:{target.hostname or '127.0.0.1'}:{target.port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its forked children die with the group
        )
        _wait_listening(self.host_ip, port)
        self.url = with_address(url, self.host_ip, port)

    @property
    def prefix(self) -> list[str]:
        """Run a command inside the namespace (``ip netns exec`` keeps the process id)."""
        return [self._ip, "netns", "exec", self.ns]

    def cut(self) -> None:
        _run(self._ip, "link", "set", self.host_if, "down")

    def heal(self) -> None:
        _run(self._ip, "link", "set", self.host_if, "up")

    def close(self) -> None:
        if self._relay is not None and self._relay.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._relay.pid, signal.SIGKILL)
            self._relay.wait(timeout=10)
        # Deleting the namespace destroys the pair once no process is left inside it;
        # the host end is deleted explicitly so a worker still inside cannot keep it.
        subprocess.run([self._ip, "link", "del", self.host_if], capture_output=True, timeout=10)
        subprocess.run([self._ip, "netns", "del", self.ns], capture_output=True, timeout=10)


class DelayProxy:
    """A relay process (``delay_proxy.py``) adding ``delay ± jitter`` seconds each way,
    and a stall of ``spike`` seconds on :meth:`spike`."""

    def __init__(self, url: str, *, delay: float, jitter: float, seed: int, spike: float, log: Path) -> None:
        target = urlsplit(url)
        with log.open("ab") as out:
            self._proc = subprocess.Popen(
                [
                    sys.executable, str(PROXY), f"{target.hostname or '127.0.0.1'}:{target.port}",
                    "--delay", str(delay), "--jitter", str(jitter), "--seed", str(seed), "--spike", str(spike),
                ],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=out,
            )  # fmt: skip
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode()
        if not line.startswith("listening "):
            self._proc.kill()
            raise RuntimeError(f"delay proxy did not start: {line!r} (see {log})")
        port = int(line.split()[1])
        self.url = with_address(url, "127.0.0.1", port)

    def spike(self) -> None:
        """Stall everything the relay carries for ``spike`` seconds, starting now."""
        self._proc.send_signal(signal.SIGUSR1)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _wait_listening(host: str, port: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.01)  # the relay's own start-up
    raise RuntimeError(f"socat relay did not listen on {host}:{port} within {within}s")
