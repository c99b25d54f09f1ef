"""Training engine: tiny runs end to end, bit-exact resume after SIGKILL, NaN stop, DDP, CLI errors.

Everything is tiny (a squeezenet_design with base_e=16, 24 px synthetic images, a few
steps) so the whole file stays well under 90 s on two shared CPU cores.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import require_module
from squeezenet.training import NonFiniteLossError, TrainingError, train
from test_datasets import make_tar, make_tree

SIZE = 24
TINY = {"model": "squeezenet_design", "model_kwargs": {"base_e": 16, "incr_e": 16}}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("data") / "d", n_train=8, n_val=2, size=SIZE)


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def config(tree: Path, out: Path, **overrides) -> dict:
    base = {
        "data": str(tree),
        "output": str(out),
        **TINY,
        "image_size": SIZE,
        "batch_size": 4,
        "global_batch": 8,
        "epochs": 2,
        "workers": 0,
        "lr": 0.05,
        "threads": 1,
        "dropout": 0.25,
        # fp32 on every CPU: "auto" picks bf16 on CPUs with AVX512-BF16/AMX, where this tiny model's
        # logits (conv10 bias 1.0 plus activations ~1e-3) round to equal values and it cannot learn
        "amp": "none",
    }
    base.update(overrides)
    return base


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_train_exports_usable_weights(tree, tmp_path):
    from squeezenet.inference import evaluate_dataset
    from squeezenet.weights import build_model_from_weights

    result = train(config(tree, tmp_path / "run", epochs=2))
    run = tmp_path / "run"
    names = ("config.json", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt", "best.safetensors")
    for name in (*names, "val_report/per_class.csv", "val_report/confusion.csv"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and "val_top1" in records[0] and records[-1]["step"] == 6
    assert result.steps == 6 and result.best_top1 is not None
    model = build_model_from_weights(run / "best.safetensors")
    assert model.weights_info.classes == ("cat", "dog", "emu") and model.weights_info.preprocessing.crop == SIZE
    ev = evaluate_dataset(model, tree / "val", workers=0, per_class=True)
    assert ev.n == 6 and set(ev.per_class) == {"cat", "dog", "emu"} and len(ev.confusion) == 3
    best = max(records, key=lambda r: (r["val_top1"], -r["epoch"]))  # the first epoch with the top score
    assert result.best_top1 == best["val_top1"] and ev.top1 == pytest.approx(best["val_top1"], abs=1e-9)
    last = evaluate_dataset(build_model_from_weights(run / "last.safetensors"), tree / "val", workers=0)
    assert last.top1 == pytest.approx(records[-1]["val_top1"], abs=1e-9)  # each file holds its epoch's weights
    # the dataset the run trained on, as a folder with splits or as its archive: scored on its held-out split
    archive = make_tar(tree, tmp_path / "tree.tar.gz", "w:gz")
    for data in (tree, archive):
        assert evaluate_dataset(model, data, workers=0).to_dict()["top1"] == ev.top1
        assert evaluate_dataset(model, data, split="train", workers=0).n == 24


def test_eval_dataset_errors(tree, tmp_path, capsys):
    from squeezenet.cli.main import main

    train(config(tree, tmp_path / "run", epochs=1, max_steps=1))
    weights = str(tmp_path / "run" / "best.safetensors")
    capsys.readouterr()
    only_train = make_tree(tmp_path / "only_train", n_train=1, n_val=1, size=SIZE)
    shutil.rmtree(only_train / "val")
    other = make_tree(tmp_path / "other", n_train=1, n_val=1, size=SIZE, classes=("cat", "dog", "yak"))
    cases = [(only_train, "has no 'val' split (it has: train)"), (other, "'yak'"),
             ("elpv:2", "elpv:2: its classes ['functional', 'defective'] are not the expected ['cat'")]  # fmt: skip
    for data, message in cases:
        assert main(["eval", "-w", weights, "-d", str(data), "-j", "0"]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


_KILL_SCRIPT = """
import json, sys, time
from pathlib import Path
from squeezenet.training import TrainConfig, train
cfg, kill_at, marker = json.loads(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
def hook(ctx):
    if ctx.step == kill_at:  # after the optimizer step, before its checkpoint: a kill mid-step
        marker.write_text(str(ctx.step))
        time.sleep(120)
train(TrainConfig(**cfg), on_step=hook if kill_at else None)
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_exact(tree, tmp_path):
    script = tmp_path / "run_train.py"
    script.write_text(_KILL_SCRIPT)
    overrides = {"epochs": 2, "workers": 1, "checkpoint_every": 1, "recipe": "modern"}
    reference = train(config(tree, tmp_path / "ref", **overrides))
    assert reference.steps == 6

    cfg = config(tree, tmp_path / "killed", **overrides)
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen([sys.executable, str(script), json.dumps(cfg), "5", str(marker)], env=env)
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None, "training subprocess ended before step 5"
            assert time.time() < deadline, "step 5 never came"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert (killed["step"], killed["epoch"], killed["batch"]) == (4, 1, 2)  # mid-epoch 1: step 5 was lost

    cfg["resume"] = "auto"
    done = subprocess.run([sys.executable, str(script), json.dumps(cfg), "0", str(marker)], env=env, timeout=120)
    assert done.returncode == 0
    final = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert final["step"] == 6
    assert_bitwise_equal(weights_of(tmp_path / "ref" / "last.pt"), final["model"])
    ref = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)
    assert_bitwise_equal(ref["ema"]["module"], final["ema"]["module"])
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]


def test_resume_across_epoch_boundary_in_process(tree, tmp_path):
    """A checkpoint written at an epoch's end (no step checkpoints) resumes exactly too (paper recipe)."""
    overrides = {"epochs": 3, "recipe": "paper", "workers": 0}
    ref = train(config(tree, tmp_path / "ref", **overrides))
    train(config(tree, tmp_path / "part", max_steps=3, **overrides))
    part = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert (part["epoch"], part["step"]) == (1, 3)
    done = train(config(tree, tmp_path / "part", resume="auto", **overrides))
    assert done.steps == ref.steps == 9
    assert_bitwise_equal(weights_of(tmp_path / "ref" / "last.pt"), weights_of(tmp_path / "part" / "last.pt"))


def test_resume_refuses_changed_options_and_allows_operational_ones(tree, tmp_path):
    """--lr/--epochs/--batch-size on resume were silently overridden by the checkpoint's
    scheduler or broke the sample order; now they are refused, naming each difference.
    Where data and files are, threads, workers and an early stop may change."""
    overrides = {"epochs": 2, "workers": 0}
    train(config(tree, tmp_path / "run", max_steps=1, **overrides))
    changed = {"lr": 0.5, "epochs": 3, "batch_size": 2, "label_smoothing": 0.2, "mixup": 0.2}
    with pytest.raises(TrainingError) as err:
        train(config(tree, tmp_path / "run", resume="auto", **{**overrides, **changed}))
    message = str(err.value)
    assert "--epochs 2 (now 3)" in message and "--lr 0.05 (now 0.5)" in message and "--batch-size 4 (now 2)" in message
    assert "--label-smoothing unset (now 0.2)" in message and "last.safetensors" in message
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 1  # untouched
    done = train(config(tree, tmp_path / "run", resume="auto", threads=1, max_steps=2, progress=True, **overrides))
    assert done.steps == 2


def test_cli_short_resume_continues_with_the_runs_options(tree, tmp_path, capsys):
    """`squeezenet train DATA -o RUN --resume` alone continues a run started with many
    options as it was started (bit-exact with an uninterrupted run); --max-steps is the
    stopping invocation's own; a training option given anew is refused."""
    from squeezenet.cli.main import main

    options = ["-m", "squeezenet_design", "--model-arg", "base_e=16", "--model-arg", "incr_e=16"]
    options += ["--image-size", str(SIZE), "-b", "4", "--global-batch", "8", "--epochs", "2", "--lr", "0.05"]
    options += ["--dropout", "0.25", "--threads", "1", "-j", "0", "--recipe", "paper"]
    assert main(["train", str(tree), "-o", str(tmp_path / "ref"), *options]) == 0
    assert main(["train", str(tree), "-o", str(tmp_path / "run"), *options, "--max-steps", "3"]) == 0
    assert main(["train", str(tree), "-o", str(tmp_path / "run"), "--resume", "--lr", "0.1"]) == 1
    assert "--lr 0.05 (now 0.1)" in capsys.readouterr().err
    assert main(["train", str(tree), "-o", str(tmp_path / "run"), "--resume", "-j", "0"]) == 0
    done = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert done["step"] == 6 and done["config"]["lr"] == 0.05 and done["config"]["recipe"] == "paper"
    assert_bitwise_equal(weights_of(tmp_path / "ref" / "last.pt"), done["model"])


def test_mixup_blends_pairs_and_resumes_exactly(tree, tmp_path):
    """mixup: a convex blend of the batch with a permutation of itself, off at alpha 0; its
    draws follow the checkpointed RNG, so a run stopped mid-way and resumed ends bit-exact."""
    from squeezenet.training.engine import mixup

    torch.manual_seed(0)
    images, targets = torch.rand(6, 3, 4, 4), torch.arange(6)
    mixed, partners, lam = mixup(images, targets, 0.4)
    assert 0.0 <= lam <= 1.0 and sorted(partners.tolist()) == list(range(6))
    assert torch.allclose(mixed, lam * images + (1 - lam) * images[partners])
    assert mixup(images, targets, 0.0) == (images, None, 1.0)
    overrides = {"epochs": 2, "recipe": "paper", "mixup": 0.4}
    ref = train(config(tree, tmp_path / "ref", **overrides))
    train(config(tree, tmp_path / "part", max_steps=3, checkpoint_every=1, **overrides))
    train(config(tree, tmp_path / "part", resume="auto", **overrides))
    plain = train(config(tree, tmp_path / "plain", **{**overrides, "mixup": 0.0}))
    assert ref.steps == plain.steps
    assert_bitwise_equal(weights_of(tmp_path / "ref" / "last.pt"), weights_of(tmp_path / "part" / "last.pt"))
    plain_weights, mixed_weights = weights_of(tmp_path / "plain" / "last.pt"), weights_of(tmp_path / "ref" / "last.pt")
    assert any(not torch.equal(plain_weights[k], mixed_weights[k]) for k in plain_weights)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tree, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="loss became") as info:
        train(config(tree, out, lr=1e30, checkpoint_every=1, epochs=3, recipe="paper", dropout=0.0))
    failed_step = int(str(info.value).split("step ")[1].split(" ")[0])
    good = torch.load(out / "last.pt", weights_only=True)
    assert good["step"] == failed_step - 1
    assert all(torch.isfinite(v).all() for v in good["model"].values())


def test_finetune_grayscale_new_head_frozen_features(dc_weights_path, tree, tmp_path):
    from squeezenet.weights import build_model_from_weights, load_weights

    steps = []
    result = train(
        config(
            tree, tmp_path / "ft", model=None, model_kwargs={}, weights=str(dc_weights_path),
            in_chans=1, freeze_features=True, image_size=32, epochs=1, batch_size=4, global_batch=4,
            max_steps=2, recipe="paper",
        ),
        on_step=lambda ctx: steps.append(ctx.model.features[0].weight.detach().clone()),
    )  # fmt: skip
    assert result.steps == 2
    model = build_model_from_weights(tmp_path / "ft" / "last.safetensors")
    base = load_weights(dc_weights_path)
    info = model.weights_info
    assert info.arch == "squeezenet1_0_caffe" and info.in_chans == 1 and info.num_classes == 3
    assert info.preprocessing.channel_order == "L" and info.classes == ("cat", "dog", "emu")
    assert torch.equal(model.features[0].weight, base.state_dict["features.0.weight"].sum(1, keepdim=True))
    assert info.license == base.info.license and "fine_tuned_from" in info.provenance


def test_bf16_autocast_channels_last_step(tree, tmp_path):
    """--amp bf16 runs the convolutions in bfloat16 on channels_last tensors, and its first
    loss is the fp32 loss within bfloat16's precision (the same computation, rounded)."""
    seen = {}

    def inspect(ctx):
        conv = ctx.model.features[0]
        seen["channels_last"] = conv.weight.is_contiguous(memory_format=torch.channels_last)
        with ctx.autocast():
            seen["dtype"] = conv(torch.zeros(1, 3, SIZE, SIZE).to(memory_format=torch.channels_last)).dtype

    bf16 = train(config(tree, tmp_path / "bf16", amp="bf16", max_steps=1, epochs=1), on_step=inspect)
    fp32 = train(config(tree, tmp_path / "fp32", amp="none", max_steps=1, epochs=1))
    assert seen == {"channels_last": True, "dtype": torch.bfloat16}
    assert bf16.last["train_loss"] == pytest.approx(fp32.last["train_loss"], abs=0.02)
    assert bf16.last["train_loss"] != fp32.last["train_loss"]  # rounded differently: bf16 really ran


_DDP_SCRIPT = """
import json, os, sys, torch
from squeezenet.training import TrainConfig, train
cfg = json.loads(sys.argv[1])
box = {}
train(TrainConfig(**cfg), on_step=lambda ctx: box.__setitem__("model", ctx.model))
torch.save(box["model"].state_dict(), os.path.join(cfg["output"], f"rank{os.environ['RANK']}.pt"))
"""


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_single_process(tree, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(_DDP_SCRIPT)
    common = {"recipe": "paper", "dropout": 0.0, "epochs": 1, "global_batch": 8, "workers": 0}
    cfg = config(tree, tmp_path / "ddp", batch_size=4, **common)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*cmd, json.dumps(cfg)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    assert_bitwise_equal(r0, r1)
    train(config(tree, tmp_path / "single", batch_size=8, **common))
    single = weights_of(tmp_path / "single" / "last.pt")
    for k in single:  # same global batch, same samples and augmentation per step; only summation order differs
        torch.testing.assert_close(r0[k], single[k], atol=1e-5, rtol=1e-4)


def test_plot_and_per_class_cli(tree, tmp_path, capsys):
    require_module("matplotlib", "plot")
    from squeezenet.cli.main import main

    train(config(tree, tmp_path / "run", epochs=1, max_steps=1))
    assert main(["plot", str(tmp_path / "run")]) == 0
    for name in ("loss.png", "accuracy.png", "lr.png"):
        assert (tmp_path / "run" / name).stat().st_size > 1000
    args = ["eval", "-w", str(tmp_path / "run" / "best.safetensors"), "-d", str(tree / "val"), "-j", "0"]
    assert main([*args, "--per-class", str(tmp_path / "pc")]) == 0
    lines = (tmp_path / "pc" / "per_class.csv").read_text().splitlines()
    assert lines[0] == "class,images,correct,accuracy" and len(lines) == 4
    assert (tmp_path / "pc" / "confusion.png").is_file() and (tmp_path / "pc" / "confusion.csv").is_file()
    wrong = sum(int(images) - int(correct) for _, images, correct, _ in (line.split(",") for line in lines[1:]))
    with (tmp_path / "pc" / "errors.csv").open() as f:
        errors = list(csv.DictReader(f))
    assert len(errors) == wrong > 0  # one step of training leaves mistakes to list
    for row in errors:
        assert row["true"] != row["predicted"] and Path(row["path"]).parent.name == row["true"]
        assert float(row["confidence"]) >= float(row["true_probability"])
    confidences = [float(row["confidence"]) for row in errors]
    assert confidences == sorted(confidences, reverse=True)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--global-batch", "6"], "not a multiple"),
        (["--global-batch", "400", "--batch-size", "4"], "fewer than one global batch"),
        (["--resume", "/nonexistent/last.pt"], "no such checkpoint"),
        (["--model", "nosuchnet"], "unknown model"),
        (["--image-size", "12"], "minimum input"),
        (["--optimizer", "adamw"], "give its --lr too"),
        (["--resize", "16"], "--resize 16 is smaller than the"),
        (["--model-arg", "foo=1"], "unknown model option(s) foo; this model takes: num_classes"),
        (["--val-split", "0.25", "--val-data", "."], "--val-split and --val-data both name a validation set"),
    ],
)
def test_cli_bad_options_one_line(tree, tmp_path, capsys, extra, message):
    """Options whose badness shows only against the data or the model (out-of-range numbers are
    usage lines at parse time: tests/test_cli_usage.py)."""
    from squeezenet.cli.main import main

    args = ["train", str(tree), "-o", str(tmp_path / "r"), "-m", "squeezenet_design", "--model-arg", "base_e=16"]
    args += ["--model-arg", "incr_e=16", "--image-size", str(SIZE), "-b", "4", "-j", "0", *extra]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("squeezenet: error:") and message in err[0], err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model", "squeezenet1_1"], "holds a squeezenet1_0_caffe, and fine-tuning keeps the weights' architecture"),
        (["--model-arg", "dropout=0.2"], "--model-arg builds a new model"),
    ],
)
def test_cli_finetune_options_that_weights_override(dc_weights_path, tree, tmp_path, capsys, extra, message):
    """Options that only shape a new model are refused with --weights, not silently dropped."""
    from squeezenet.cli.main import main

    args = ["train", str(tree), "-o", str(tmp_path / "r"), "--weights", str(dc_weights_path), "--max-steps", "1"]
    assert main([*args, "-j", "0", *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("squeezenet: error:") and message in err[0], err
    assert not (tmp_path / "r" / "last.pt").exists()


@pytest.mark.slow
def test_cli_bad_data(tmp_path, capsys):
    from conftest import run_cli
    from squeezenet.cli.main import main

    done = run_cli("train", str(tmp_path / "missing"), "-o", str(tmp_path / "r"), timeout=120)  # the real exit status
    assert done.returncode == 1 and "no such dataset" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    bad_tar = tmp_path / "bad.tar"
    bad_tar.write_bytes(b"\0" * 100 + b"nonsense" * 200)
    for data, message in ((tmp_path / "empty", "sub-folder per class"), (bad_tar, "tar archive")):
        assert main(["train", str(data), "-o", str(tmp_path / "r")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_val_split_holdout_does_not_follow_the_run_seed(tree, tmp_path, monkeypatch):
    """Runs with other seeds validate on the same held-out images (and never train on them)."""
    import squeezenet.training.api as api

    held_out = []
    real_open_run_data = api.open_run_data

    def recording(*args, **kwargs):
        data = real_open_run_data(*args, **kwargs)
        held_out.append(sorted(data.val.names))
        assert not set(data.val.names) & set(data.train.names)
        return data

    monkeypatch.setattr(api, "open_run_data", recording)
    for seed in (0, 5):
        train(config(tree / "train", tmp_path / f"seed{seed}", val_split=0.25, seed=seed, max_steps=1, epochs=1))
    assert len(held_out) == 2 and len(held_out[0]) == 6 and held_out[0] == held_out[1]


@pytest.fixture(scope="module")
def test_tree(tmp_path_factory) -> Path:
    """train/ and test/, no val/: the layout of ELPV and of the CIFAR-10 archive."""
    root = make_tree(tmp_path_factory.mktemp("data") / "t", n_train=10, n_val=2, size=SIZE)
    (root / "val").rename(root / "test")
    return root


def test_best_is_chosen_without_reading_the_test_split(test_tree, tmp_path, monkeypatch):
    """By default a dataset with only train/ and test/ validates on a hold-out of its training
    images: every image the run reads before the final scoring is a training image, the test
    images are read once, after the last epoch, and their scores are recorded."""
    from squeezenet.data.labeled import LabeledImages
    from squeezenet.training.loop import Run

    reads: list[str] = []
    real_getitem, real_score_test = LabeledImages.__getitem__, Run.score_test

    def reading(self, index):
        item = real_getitem(self, index)
        reads.append(item[2])
        return item

    def scoring(self, *args, **kwargs):
        reads.append("<final scoring>")
        return real_score_test(self, *args, **kwargs)

    monkeypatch.setattr(LabeledImages, "__getitem__", reading)
    monkeypatch.setattr(Run, "score_test", scoring)
    result = train(config(test_tree, tmp_path / "run", epochs=2))
    final = reads.index("<final scoring>")
    before, after = reads[:final], reads[final + 1 :]
    assert before and all("/train/" in name for name in before)
    assert sorted(after) == sorted(str(p) for p in (test_tree / "test").rglob("*.png"))  # each once
    assert result.images == {"train": 27, "val": 3, "test": 6} and result.last["val_n"] == 3
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("test_n") for r in records] == [None, 6]  # the last epoch's record holds the test scores
    assert result.test_top1 == records[-1]["test_top1"] == result.test["test_top1"]
    assert (tmp_path / "run" / "test_report" / "per_class.csv").is_file()
    assert "test_top1" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]


def test_log_names_the_images_that_validate_and_those_scored_once(test_tree, tmp_path, capsys):
    result = train(config(test_tree, tmp_path / "run", epochs=1, max_steps=1))
    err = capsys.readouterr().err
    protocol = (
        "validating on 3 of the 30 training images (10 % held out per class, seed 0); "
        "the 6 test images are scored once, after the last epoch"
    )
    assert protocol in err.splitlines() and result.protocol == protocol
    assert "on the 6 test images, scored once with the weights of the last epoch (1/1, step 1" in err
    assert "warning" not in err


def test_elpv_validates_on_a_tenth_of_its_training_cells():
    require_module("elpv_dataset", "elpv")
    from squeezenet.training import TrainConfig
    from squeezenet.training.run_data import open_run_data

    data = open_run_data(TrainConfig(data="elpv:4"))
    assert data.protocol == (
        "validating on 197 of the 1968 training images (10 % held out per class, seed 0); "
        "the 656 test images are scored once, after the last epoch"
    )
    assert data.val.class_counts() == [round(c / 9) for c in data.train.class_counts()]  # stratified per level
    assert not set(data.val.names) & set(data.train.names) and data.test.split == "test"


def test_val_split_0_validates_on_the_test_split_with_a_warning(test_tree, tmp_path, capsys):
    """--val-split 0 keeps the old protocol (best chosen on the test images), and says so."""
    result = train(config(test_tree, tmp_path / "run", epochs=1, max_steps=1, val_split=0))
    err = capsys.readouterr().err
    warning = (
        "squeezenet: warning: --val-split 0: validating on the 6 test images, so best is chosen on the test images"
    )
    assert warning in err and "validating on the 6 test images; no test split to score" in err
    assert result.images == {"train": 30, "val": 6} and result.test_top1 is None and result.last["val_n"] == 6


def test_own_val_split_validates_and_val_data_leaves_the_test_split_for_the_end(tree, test_tree, tmp_path, capsys):
    result = train(config(tree, tmp_path / "own", epochs=1, max_steps=1))
    assert result.protocol == "validating on the 6 val images; no test split to score" and result.test_top1 is None
    other = train(config(test_tree, tmp_path / "other", epochs=1, max_steps=1, val_data=str(tree / "val")))
    assert other.images == {"train": 30, "val": 6, "test": 6} and other.test_top1 is not None
    assert other.protocol.startswith(f"validating on the 6 images of {tree / 'val'}; the 6 test images are scored")


def test_resume_with_the_default_holdout_is_exact_and_keeps_it(test_tree, tmp_path):
    """The hold-out is a fixed draw: a run stopped mid-epoch and resumed ends bit-exact; a
    resume that would change the training images (here --val-data) is refused."""
    overrides = {"epochs": 2, "recipe": "paper", "workers": 0}
    ref = train(config(test_tree, tmp_path / "ref", **overrides))
    train(config(test_tree, tmp_path / "part", max_steps=4, **overrides))
    with pytest.raises(TrainingError, match="the run trained on 27 images, this one would on 30"):
        train(config(test_tree, tmp_path / "part", resume="auto", val_data=str(test_tree / "test"), **overrides))
    done = train(config(test_tree, tmp_path / "part", resume="auto", **overrides))
    assert done.steps == ref.steps == 6 and done.test_top1 == ref.test_top1
    assert_bitwise_equal(weights_of(tmp_path / "ref" / "last.pt"), weights_of(tmp_path / "part" / "last.pt"))


def test_refuses_to_overwrite_a_run(tree, tmp_path):
    train(config(tree, tmp_path / "run", max_steps=1, epochs=1))
    with pytest.raises(TrainingError, match="already holds a run"):
        train(config(tree, tmp_path / "run", max_steps=1, epochs=1))


def test_sampler_shards_match_single_process():
    from squeezenet.training.engine import ResumableSampler

    single = list(ResumableSampler(40, 8, 5, seed=3))
    r0 = list(ResumableSampler(40, 4, 5, rank=0, world=2, seed=3))
    r1 = list(ResumableSampler(40, 4, 5, rank=1, world=2, seed=3))
    for j in range(5):
        assert sorted(single[8 * j : 8 * j + 8]) == sorted(r0[4 * j : 4 * j + 4] + r1[4 * j : 4 * j + 4])
    resumed = ResumableSampler(40, 8, 5, seed=3)
    resumed.set_epoch(0, 2)
    assert list(resumed) == single[16:]


def test_recipes_schedule_and_init():
    from squeezenet.models import build_architecture
    from squeezenet.training.recipes import caffe_xavier_init, lr_factor

    assert lr_factor(0, 100, 0, "poly", 1.0) == 1.0 and lr_factor(50, 100, 0, "poly", 1.0) == 0.5
    assert lr_factor(0, 100, 10, "cosine", 1.0) == 0.1 and abs(lr_factor(100, 100, 10, "cosine", 1.0)) < 1e-12
    model = build_architecture("squeezenet1_0", num_classes=10)
    caffe_xavier_init(model)
    w = model.features[0].weight
    assert (
        w.abs().max() <= (3 / w[0].numel()) ** 0.5 and abs(float(model.final_conv.weight.detach().std()) - 0.01) < 2e-3
    )


def test_run_plan_resolves_the_recipe():
    """The paper's 512 by accumulation; lr scaled to the global batch, quartered when
    fine-tuning; the recipe's warmup capped at a quarter of a short run, an explicit one kept."""
    from squeezenet.training import TrainConfig
    from squeezenet.training.plan import plan_run
    from squeezenet.training.recipes import get_recipe

    paper, modern = get_recipe("paper"), get_recipe("modern")
    plan = plan_run(TrainConfig(data="d", recipe="paper", batch_size=64), paper, 2, 5_000)
    assert (plan.global_batch, plan.accum, plan.steps_per_epoch, plan.micro_batches) == (512, 4, 9, 36)
    assert plan.lr == pytest.approx(0.04) and plan.total_steps == 68 * 9
    tuned = plan_run(TrainConfig(data="d", recipe="paper", batch_size=64, weights="w"), paper, 2, 5_000)
    assert tuned.lr == pytest.approx(0.01)
    short = plan_run(TrainConfig(data="d", batch_size=32, global_batch=64, epochs=2), modern, 1, 640)
    assert short.lr == pytest.approx(0.2 * 64 / 512) and short.warmup_steps == 5  # 2 epochs of 10 steps, capped
    assert (
        plan_run(
            TrainConfig(data="d", batch_size=32, global_batch=64, epochs=2, warmup_epochs=2), modern, 1, 640
        ).warmup_steps
        == 20
    )


@pytest.mark.slow
def test_no_dead_classes_beats_majority(tmp_path):
    """Regression: conv10 -> ReLU -> average pool and no BatchNorm let classes "die" (pre-activation
    negative everywhere for every input: logit 0, gradient 0 for good). With zero conv10 biases a run
    from scratch lost every class within a few dozen warmup steps and sat at loss ln(C); the engine's
    positive conv10 bias (``init_classifier``) keeps them alive and the run must learn this easy task.
    """
    data = make_tree(tmp_path / "easy", n_train=16, n_val=4, size=SIZE)
    alive: list[float] = []
    box: dict = {}

    def on_step(ctx) -> None:
        if "hook" not in box:

            def record(module, _inputs, out):
                if module.training:
                    box["alive"] = (out.detach().float().amax((0, 2, 3)) > 0).float().mean().item()

            box["hook"] = ctx.model.final_conv.register_forward_hook(record)
        if "alive" in box:
            alive.append(box["alive"])

    cfg = config(data, tmp_path / "run", recipe="modern", epochs=8, lr=0.02, warmup_epochs=1, dropout=0.0)
    result = train(cfg, on_step=on_step)
    assert alive and min(alive[-5:]) == 1.0, f"dead classes: alive fraction per step {alive}"
    assert result.last["val_top1"] >= 0.66, result.last  # majority class: 1/3


def test_new_head_starts_alive_and_neutral(dc_weights_path, tree, tmp_path):
    """Fine-tuning: the new conv10 starts with zero weights and a positive bias (loss ln C, all alive)."""
    from squeezenet.training import TrainConfig, build_model
    from squeezenet.training.recipes import CLASSIFIER_BIAS, get_recipe

    cfg = TrainConfig(data=str(tree), weights=str(dc_weights_path), in_chans=1)
    model, *_ = build_model(cfg, get_recipe("modern"), num_classes=3, in_chans=1)
    assert torch.count_nonzero(model.final_conv.weight) == 0
    assert torch.all(model.final_conv.bias == CLASSIFIER_BIAS)
    scratch, *_ = build_model(TrainConfig(data=str(tree), **TINY), get_recipe("paper"), num_classes=3, in_chans=3)
    assert torch.all(scratch.final_conv.bias == CLASSIFIER_BIAS) and scratch.final_conv.weight.std() > 0


def test_top5_is_not_reported_for_five_classes_or_fewer(tree, tmp_path, capsys):
    """With 3 classes every label is in the top five: no "top-5 100.00%" in the log, the
    metrics or eval; and training's validation and eval score the same images alike."""
    from squeezenet.cli.main import main
    from squeezenet.inference import evaluate_dataset
    from squeezenet.weights import build_model_from_weights

    result = train(config(tree, tmp_path / "run", epochs=1))
    err = capsys.readouterr().err
    assert "val top-1" in err and "top-5" not in err
    assert result.last["val_top5"] is None
    model = build_model_from_weights(result.last_weights)
    scored = evaluate_dataset(model, tree / "val", workers=0)
    assert scored.top5 is None and scored.n == result.last["val_n"] == 6
    assert scored.top1 == pytest.approx(result.last["val_top1"])  # one scoring loop, the same figure
    assert main(["eval", "-w", str(result.last_weights), "-d", str(tree / "val"), "-j", "0"]) == 0
    assert "top-5" not in capsys.readouterr().out
