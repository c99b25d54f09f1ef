"""Two machines emulated on one: two network namespaces joined by a rate-limited link, one torchrun node in each.

    python scripts/two_nodes.py --rate 100mbit -- -m squeezenet.cli.main train DATA --device cpu ...
    python scripts/two_nodes.py --rate none -- benchmarks/some_script.py ...      # unthrottled link

Everything after ``--`` is what torchrun runs on each node (a script, or ``-m module``), exactly as
on two real machines: node 0 runs

    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d \\
        --rdzv-endpoint ADDR0:29400 --rdzv-id ID --rdzv-conf is_host=1 --local-addr ADDR0 ...

and node 1 the same with ``--rdzv-conf is_host=0 --local-addr ADDR1`` (c10d numbers the nodes
itself, in the order they join: ``--node-rank`` is for the static rendezvous only). The two options
that a plain ``--rdzv-endpoint HOST:PORT`` leaves to name resolution are given: which node hosts
the rendezvous store (torchrun decides it by matching the endpoint against this machine's
hostname, which both namespaces share with the host) and the address the other node reaches
this one on (torchrun would otherwise hand the workers this machine's hostname, which resolves
to an address outside the namespaces: the run hangs after rendezvous). On real machines whose
hostnames resolve to the addresses they reach each other on, neither is needed.

The link is a veth pair; each end is shaped by ``tc qdisc ... tbf rate RATE`` (both directions).
The namespaces, and with them the link, are removed when the run ends, fails or is interrupted
(SIGINT, SIGTERM); namespaces left by a launcher that was killed outright are removed by the next
one. Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "sqnode"  # namespaces are sqnode<launcher pid><a|b>
PORT = 29400
_NAME = re.compile(rf"^{PREFIX}(\d+)([ab])\b")


class TwoNodesError(RuntimeError):
    """The emulated link cannot be made here (the message says why, in one line)."""


_UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bit": 1.0}


def rate_bits(rate: str) -> float:
    """A tc rate ('100mbit', '1gbit', '2.5gbit') in bits per second."""
    text = rate.strip().lower()
    for unit, scale in _UNITS.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise TwoNodesError(f"two_nodes: rate {rate!r}: give it as tc does, e.g. 100mbit or 1gbit")


def burst_bytes(rate: str) -> int:
    """The token bucket's depth: at least one kernel tick's worth of the rate (HZ is 250 to 1000),
    else the bucket empties between ticks and caps the rate below the one asked (measured: 32 KB
    held '1gbit' to about 270 Mbit/s)."""
    return max(32 * 1024, int(rate_bits(rate) / 8 / 250))


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Namespaces of launchers that no longer run (killed with SIGKILL, say): removed."""
    listing = _ip("netns", "list", check=False).stdout
    stale = [m.group(0) for line in listing.splitlines() if (m := _NAME.match(line)) and not _pid_alive(int(m[1]))]
    for name in stale:
        _ip("netns", "delete", name, check=False)
    return stale


def check_can_make_namespaces() -> None:
    if shutil.which("ip") is None or shutil.which("tc") is None:
        raise TwoNodesError("two_nodes: needs iproute2 (ip, tc): apt-get install iproute2")
    if os.geteuid() != 0:
        raise TwoNodesError("two_nodes: needs root to make network namespaces (run as root, as CI does)")


@dataclass
class TwoNodes:
    """The two namespaces, their link, and the torchrun processes started in them.

    ``rate``: a tc rate ("100mbit", "1gbit") or None for an unshaped link. Use as a context
    manager: the namespaces exist inside the ``with`` block and are removed on the way out,
    whatever happened inside."""

    rate: str | None = "100mbit"
    subnet: int = field(default_factory=lambda: 16 + os.getpid() % 200)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def namespaces(self) -> tuple[str, str]:
        return f"{PREFIX}{os.getpid()}a", f"{PREFIX}{os.getpid()}b"

    def address(self, rank: int) -> str:
        return f"10.231.{self.subnet}.{rank + 1}"

    def interface(self, rank: int) -> str:
        return f"sqv{os.getpid() % 100000}{'ab'[rank]}"

    def __enter__(self) -> TwoNodes:
        check_can_make_namespaces()
        remove_stale_namespaces()
        try:
            self._make_link()
        except subprocess.CalledProcessError as exc:
            self.close()
            raise TwoNodesError(f"two_nodes: {' '.join(exc.cmd)} failed: {exc.stderr.strip()}") from None
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _make_link(self) -> None:
        for name in self.namespaces:
            _ip("netns", "add", name)
        _ip("link", "add", self.interface(0), "type", "veth", "peer", "name", self.interface(1))
        for rank, name in enumerate(self.namespaces):
            dev = self.interface(rank)
            _ip("link", "set", dev, "netns", name)
            _ip("-n", name, "addr", "add", f"{self.address(rank)}/24", "dev", dev)
            _ip("-n", name, "link", "set", dev, "up")
            _ip("-n", name, "link", "set", "lo", "up")
            if self.rate:
                shape = ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", self.rate,
                         "burst", str(burst_bytes(self.rate)), "latency", "400ms"]  # fmt: skip
                subprocess.run(["ip", "netns", "exec", name, *shape], capture_output=True, text=True, check=True)

    def torchrun_args(self, rank: int, nproc: int = 1) -> list[str]:
        """The torchrun options of node ``rank``: what a user passes on a real machine."""
        return [
            "--nnodes", "2", "--nproc-per-node", str(nproc),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{self.address(0)}:{PORT}", "--rdzv-id", self.run_id,
            "--rdzv-conf", f"is_host={1 if rank == 0 else 0}", "--local-addr", self.address(rank),
        ]  # fmt: skip

    def launch(self, rank: int, program: list[str], env: dict | None = None, log: Path | None = None):
        """Start torchrun for node ``rank`` in its namespace, running ``program`` (``-m module ...``
        or a script and its arguments); returns the process (its own process group)."""
        env = {**os.environ, **(env or {}), "GLOO_SOCKET_IFNAME": self.interface(rank)}
        command = ["ip", "netns", "exec", self.namespaces[rank], sys.executable, "-m", "torch.distributed.run",
                   *self.torchrun_args(rank), *program]  # fmt: skip
        out = open(log, "w") if log else None  # noqa: SIM115 (closed with the process, in close())
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True)  # fmt: skip
        proc.log_file = out
        self.processes.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL, grace: float = 10.0) -> None:
        """Kill a node: torchrun and the workers it started (one process group), and wait until
        every process of the group is gone, not torchrun alone: a worker that outlived its
        torchrun could still hold the rendezvous port or the checkpoint when the node is started
        again (a resumed run once hung so). Whatever is left after ``grace`` seconds is SIGKILLed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait()
        deadline = time.monotonic() + grace
        while _group_alive(proc.pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.05)

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM)
            if proc.log_file:
                proc.log_file.close()
        self.processes.clear()
        for name in self.namespaces:
            _ip("netns", "delete", name, check=False)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (a zombie whose parent has gone counts as gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                return True
    return False


def run_both(nodes: TwoNodes, program: list[str], logs: Path | None = None, timeout: float | None = None) -> int:
    """Both nodes of one run; the first failure stops the other. Returns the worst exit status."""
    procs = [nodes.launch(rank, program, log=logs / f"node{rank}.log" if logs else None) for rank in (0, 1)]
    deadline = time.monotonic() + timeout if timeout else None
    while any(p.poll() is None for p in procs):
        if any(p.returncode not in (None, 0) for p in procs) or (deadline and time.monotonic() > deadline):
            for p in procs:
                nodes.kill(p, signal.SIGTERM)
            break
        time.sleep(0.2)
    return max((p.returncode or 0) if p.returncode is not None and p.returncode >= 0 else 1 for p in procs)


def _raise_exit(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through the ``with``: the namespaces go


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage="%(prog)s [--rate RATE] -- PROGRAM...")
    ap.add_argument("--rate", default="100mbit", help="link rate for tc ('100mbit', '1gbit'; 'none': unshaped)")
    ap.add_argument("--logs", type=Path, help="write each node's output to LOGS/node0.log, node1.log")
    ap.add_argument("--timeout", type=float, help="stop both nodes after this many seconds")
    args = ap.parse_args(argv[:split])
    program = argv[split + 1 :]
    if not program:
        ap.error("give the program torchrun runs after '--' (a script or -m module, and its arguments)")
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGINT, _raise_exit)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    try:
        with TwoNodes(None if args.rate == "none" else args.rate) as nodes:
            return run_both(nodes, program, args.logs, args.timeout)
    except TwoNodesError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
