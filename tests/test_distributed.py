"""Training on two emulated machines (two network namespaces joined by a rate-limited link, one
torchrun node in each: scripts/two_nodes.py) and what the workers send each other
(``--grad-compression``, counted by squeezenet.training.communication).

The namespaces need root (CI runs as root); without it these tests fail with the launcher's one
line, they do not skip."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, cli_in_process
from test_datasets import make_tree
from test_training import SIZE, TINY, assert_bitwise_equal

sys.path.insert(0, str(ROOT / "scripts"))
import two_nodes

# each rank saves its own final weights (rank 0 alone writes the run's files); STEP_DELAY slows
# the steps down (numbers unchanged) so that the test can kill a node in the middle of a run
_WORKER = """
import json, os, sys, time, torch
from squeezenet.training import TrainConfig, train
cfg = json.loads(sys.argv[1])
box, delay = {}, float(os.environ.get("STEP_DELAY", "0"))
def on_step(ctx):
    box["model"] = ctx.model
    time.sleep(delay)
train(TrainConfig(**cfg), on_step=on_step)
torch.save(box["model"].state_dict(), os.path.join(cfg["output"], f"rank{os.environ['RANK']}.pt"))
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data") / "d", n_train=8, n_val=2, size=SIZE)


def _config(tree, out, **overrides) -> dict:
    return {
        "data": str(tree), "output": str(out), **TINY, "image_size": SIZE, "batch_size": 2, "global_batch": 4,
        "epochs": 3, "workers": 0, "lr": 0.05, "threads": 1, "dropout": 0.0, "amp": "none", "recipe": "paper",
        "warmup_epochs": 0, "checkpoint_every": 1, **overrides,
    }  # fmt: skip


def _namespaces(launcher: int) -> list[str]:
    """The namespaces the launcher process ``launcher`` made and has not removed (other tests and
    the benchmark may hold theirs at the same time: the names carry the launcher's pid)."""
    own = f"{two_nodes.PREFIX}{launcher}"
    return [name for name in (line.split()[0] for line in two_nodes._ip("netns", "list").stdout.splitlines())
            if name in (own + "a", own + "b")]  # fmt: skip


def _launch(nodes, script, cfg, env=None) -> list:
    """Both nodes, each writing its output to OUTPUT/../<name>-node<rank>.log."""
    out = Path(cfg["output"])
    logs = [out.parent / f"{out.name}-{'resumed-' if cfg.get('resume') else ''}node{rank}.log" for rank in (0, 1)]
    return [nodes.launch(rank, [str(script), json.dumps(cfg)], env=env, log=logs[rank]) for rank in (0, 1)]


def _tails(procs) -> str:
    return "\n".join(Path(p.log_file.name).read_text()[-1500:] for p in procs)


def _run_two_nodes(nodes, script, cfg, env=None, timeout=240) -> None:
    procs = _launch(nodes, script, cfg, env)
    for p in procs:
        p.wait(timeout=timeout)
    assert all(p.returncode == 0 for p in procs), _tails(procs)


def _checkpoint_step(path) -> int:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")["step"]
    except Exception:  # not written yet
        return -1


@pytest.mark.slow
def test_two_nodes_train_to_identical_weights_and_resume_exactly_after_a_node_is_killed(tree, tmp_path):
    """PowerSGD on a 100 Mbit/s link: both nodes end with the same weights; a run whose second
    node is killed (SIGKILL, mid-run) and then resumed on both ends bit-identical to the run
    that was never interrupted, PowerSGD's error feedback and warm-start state included."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    whole = _config(tree, tmp_path / "whole", grad_compression="powersgd:1")
    cut = {**whole, "output": str(tmp_path / "cut")}
    with two_nodes.TwoNodes("100mbit") as nodes:
        _run_two_nodes(nodes, script, whole)
        a0, a1 = (torch.load(tmp_path / "whole" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
        assert_bitwise_equal(a0, a1)
        procs = _launch(nodes, script, cut, env={"STEP_DELAY": "0.4"})
        deadline = time.monotonic() + 180
        while _checkpoint_step(tmp_path / "cut" / "last.pt") < 4:  # past PowerSGD's warm-up (step 2)
            assert time.monotonic() < deadline and procs[0].poll() is None, _tails(procs)
            time.sleep(0.1)
        nodes.kill(procs[1])  # SIGKILL: the node is gone, no clean shutdown
        nodes.kill(procs[0], signal.SIGTERM)
        stopped_at = _checkpoint_step(tmp_path / "cut" / "last.pt")
        _run_two_nodes(nodes, script, {**cut, "resume": "auto"})
    b0, b1 = (torch.load(tmp_path / "cut" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert stopped_at < 18  # 3 epochs x 6 steps: the cut run had steps left
    assert_bitwise_equal(b0, b1)
    assert_bitwise_equal(a0, b0)
    metrics = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grad_compression"] == "powersgd:1" for r in metrics)
    assert _namespaces(os.getpid()) == []


@pytest.mark.slow
@pytest.mark.parametrize("compression,bytes_per_value", [("none", 4), ("bf16", 2)])
def test_bytes_counted_equal_the_gradient_buckets(tree, tmp_path, compression, bytes_per_value):
    """The bytes a step sends, counted where the hook hands them to the all-reduce, equal the
    analytic size of the gradient buckets: every trainable value, in 4 or 2 bytes."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    cfg = _config(tree, tmp_path / "run", grad_compression=compression, epochs=1, checkpoint_every=0)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", str(script)]
    done = subprocess.run([*cmd, json.dumps(cfg)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[:2500] + "\n...\n" + done.stderr[-1500:]  # a rank's error, torchrun's
    values = sum(t.numel() for t in torch.load(tmp_path / "run" / "rank0.pt", weights_only=True).values())
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["sent_bytes_per_step"] == values * bytes_per_value
    assert record["grad_compression"] == compression


def test_grad_compression_needs_several_processes(tree, tmp_path, capsys):
    rc, _, err = cli_in_process(capsys, "train", str(tree), "-o", str(tmp_path / "r"), "--grad-compression", "bf16")
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "--grad-compression bf16: compresses the gradients data-parallel processes exchange" in err


@pytest.mark.parametrize("value", ["zip", "powersgd:0", "bf16:2", "powersgd:x"])
def test_bad_grad_compression_is_one_line(tree, tmp_path, capsys, value):
    rc, _, err = cli_in_process(capsys, "train", str(tree), "-o", str(tmp_path / "r"), "--grad-compression", value)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and f"--grad-compression {value!r}" in err


def test_the_link_is_removed_when_the_program_fails_or_the_launcher_is_interrupted(tmp_path):
    failing = tmp_path / "fail.py"
    failing.write_text("raise SystemExit(3)\n")
    launcher = [sys.executable, str(ROOT / "scripts" / "two_nodes.py"), "--rate", "1gbit", "--"]
    failed = subprocess.Popen([*launcher, str(failing)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert failed.wait(timeout=120) != 0 and _namespaces(failed.pid) == []
    sleeper = tmp_path / "sleep.py"
    sleeper.write_text("import time\ntime.sleep(120)\n")
    proc = subprocess.Popen([*launcher, str(sleeper)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(_namespaces(proc.pid)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(2)  # torchrun and its workers started
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    assert _namespaces(proc.pid) == []


def test_the_launcher_without_rights_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(two_nodes.os, "geteuid", lambda: 1000)
    assert two_nodes.main(["--", "x.py"]) == 1
    err = capsys.readouterr().err
    assert err == "two_nodes: needs root to make network namespaces (run as root, as CI does)\n"


def test_the_step_model_fits_the_link_and_adds_what_the_backward_pass_does_not_hide():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _distributed_model as m

    a, bandwidth = m.link_fit([{"bytes": s, "s": 0.002 + s / 1e7} for s in (1e3, 1e5, 1e6, 8e6)])
    assert a == pytest.approx(0.002) and bandwidth == pytest.approx(1e7)
    transfer = lambda size: m.link_time(size, 0.0, 1e6)  # noqa: E731  (1 MB/s, no latency)
    # two buckets: 1 MB ready at 0.5 s of the backward pass, 2 MB at its end (1.0 s): the first
    # is done at 1.5 s, the second waits for it and ends at 3.5 s: 2.5 s after the backward pass
    assert m.after_backward([(0.5, 1e6), (1.0, 2e6)], "none", transfer) == pytest.approx(2.5)
    # PowerSGD's chain after the backward pass: 0.1 MB, 0.2 s of work, 0.3 MB
    assert m.after_backward([(1.0, 1e5), (1.2, 3e5)], "powersgd:2", transfer, [0.2]) == pytest.approx(0.6)
    assert m.chain_gaps([(1.0, 1e5), (1.35, 3e5)], transfer) == pytest.approx([0.25])
    # N workers: 2(N-1)/N of the bytes, (N-1) latencies of a 2-node all-reduce
    assert m.link_time(1e6, 0.01, 1e6, workers=4) == pytest.approx(3 * 0.01 + 1.5)


def test_ddp_sends_several_buckets_during_the_backward_pass_and_powersgd_one():
    """DDP's default 25 MiB bucket holds all of a SqueezeNet's gradient, which then waits for the
    whole backward pass; the buckets are about 1/16 of the gradient, none under 1 MiB; PowerSGD keeps
    one bucket (its chained all-reduces need one order on every worker)."""
    from torchvision.models import alexnet, squeezenet1_1

    from squeezenet.training.communication import ddp_options
    from squeezenet.training.config import parse_grad_compression

    small, large = squeezenet1_1(), alexnet()
    assert ddp_options(small, parse_grad_compression("bf16"))["bucket_cap_mb"] == 1.0
    mib = sum(p.numel() for p in large.parameters()) * 4 / 2**20
    assert ddp_options(large, parse_grad_compression("none"))["bucket_cap_mb"] == pytest.approx(mib / 16)
    assert ddp_options(small, parse_grad_compression("powersgd:2"))["bucket_cap_mb"] >= 4.7
