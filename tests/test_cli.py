"""The real command line in subprocesses: info, eval (the accuracy check), predict, convert.

Each subprocess costs seconds of imports, so every command runs once (module fixtures)
and several tests read its output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import DC_WEIGHTS, IMAGENET_SAMPLES, run_cli
from squeezenet.errors import DataError

pytestmark = pytest.mark.slow  # every test here starts the real command line (seconds of imports each)

# correctly classified samples whose wnid index is far from their rank among the folders
SUBSET = {
    "n01440764": ("n01440764_tench.JPEG", 0, "tench"),
    "n06874185": ("n06874185_traffic_light.JPEG", 920, "traffic light"),
    "n07753113": ("n07753113_fig.JPEG", 952, "fig"),
}


def ok_json(proc):
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def json_lines(proc):
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def subset(imagenet_samples, tmp_path_factory):
    root = tmp_path_factory.mktemp("subset") / "val"
    for wnid, (name, _, _) in SUBSET.items():
        (root / wnid).mkdir(parents=True)
        shutil.copyfile(imagenet_samples / wnid / name, root / wnid / name)
    return root


@pytest.fixture(scope="module")
def converted(dc_weights_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "dc.safetensors"
    proc = run_cli("convert", str(dc_weights_path), "-o", str(out))
    return proc, out


@pytest.fixture(scope="module")
def eval_subset(subset, converted):
    """eval with the converted file: its wnids travel in the safetensors metadata."""
    _, st = converted
    return run_cli("eval", "--weights", str(st), "--data", str(subset), "--json", "-j", "0")


@pytest.fixture(scope="module")
def predictions(dc_weights_path, subset, converted):
    _, st = converted
    files = [str(subset / wnid / name) for wnid, (name, _, _) in sorted(SUBSET.items())]
    return {
        "folder": json_lines(run_cli("predict", str(subset), "--weights", str(dc_weights_path), "--json")),
        "files": json_lines(run_cli("predict", *files, "--weights", str(st), "--json", "-k", "3")),
    }


def test_info_json_totals():
    desc = ok_json(run_cli("info", "squeezenet1_0", "--json"))
    assert desc["arch"] == "squeezenet1_0"
    assert desc["input_size"] == 224
    assert desc["min_input_size"] == 21
    assert desc["totals"]["params"] == 1_248_424
    assert desc["totals"]["macs"] == pytest.approx(0.82e9, rel=0.01)
    assert [r["name"] for r in desc["layers"]][-2:] == ["conv10", "avgpool10"]
    assert sum(r["params"] for r in desc["layers"]) == desc["totals"]["params"]


def test_info_text_table():
    proc = run_cli("info", "squeezenet1_1")
    assert proc.returncode == 0, proc.stderr
    assert "squeezenet:" not in proc.stderr  # no warning or error (torch's own notes may appear)
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    names = [line.split()[0] for line in lines if line.strip()]
    for layer in ["conv1", *(f"fire{i}" for i in range(2, 10)), "conv10"]:
        assert layer in names, layer
    assert "1,235,496" in proc.stdout
    assert any(line.startswith("total") for line in lines)


def test_eval_accuracy_on_shared_samples(dc_weights_path, imagenet_samples):
    """The real-weights accuracy check: decoded Deep Compression v1.0 on 500 images."""
    result = ok_json(
        run_cli("eval", "--weights", str(dc_weights_path), "--data", str(imagenet_samples), "--json", "-j", "2")
    )
    assert result["n"] == 500
    assert result["skipped"] == 0
    assert result["top1"] >= 0.640
    assert result["top5"] >= 0.840
    assert result["top1"] <= result["top5"] <= 1.0
    # the catalogue's (and so the README's) figures are the ones measured here
    from squeezenet.weights import CATALOG

    meta = CATALOG["squeezenet1_0_caffe.deepcompression_in1k"].meta
    assert (result["top1"], result["top5"]) == (meta["samples_top1"], meta["samples_top5"])


def test_convert_writes_safetensors(converted):
    from squeezenet.weights import detect_format, load_weights

    proc, out = converted
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    assert "squeezenet1_0_caffe" in proc.stdout
    assert detect_format(out) == "safetensors"
    info = load_weights(out).info
    assert info.arch == "squeezenet1_0_caffe"
    assert len(info.wnids) == 1000
    assert info.preprocessing.channel_order == "BGR"
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_convert_to_standard_output_keeps_its_status_line_out_of_the_file(converted):
    """``-o - | ...``: the pipe gets the file alone; 'wrote ...' goes to stderr."""
    from safetensors.torch import load

    _, out = converted
    command = [sys.executable, "-m", "squeezenet.cli.main", "convert", str(DC_WEIGHTS), "-o", "-"]
    piped = subprocess.run(command, capture_output=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert len(piped.stdout) == out.stat().st_size  # the same file, metadata in another order
    piped_tensors, file_tensors = load(piped.stdout), load(out.read_bytes())
    assert piped_tensors.keys() == file_tensors.keys()
    assert all(torch.equal(piped_tensors[k], file_tensors[k]) for k in file_tensors)
    assert "wrote /dev/stdout (squeezenet1_0_caffe, 1000 classes)" in piped.stderr.decode()  # a pipe has no size


def test_eval_subset_maps_wnids_to_model_indices(eval_subset):
    """3 folders whose classes are 0, 920, 952: rank-among-folders labels would score 1/3.

    The .net file predicts all three right (test_predict_folder), so the converted
    weights must score exactly 3/3 too.
    """
    result = ok_json(eval_subset)
    assert result["n"] == 3
    assert result["skipped"] == 0
    assert result["top1"] == 1.0
    assert result["top5"] == 1.0


def test_predict_folder(predictions):
    folder = predictions["folder"]
    assert len(folder) == 3
    by_wnid = {p["path"].split("/")[-2]: p for p in folder}
    assert set(by_wnid) == set(SUBSET)
    for wnid, (_, index, name) in SUBSET.items():
        top = by_wnid[wnid]["top"]
        assert len(top) == 5
        assert (top[0]["index"], top[0]["class"]) == (index, name)
        probs = [t["probability"] for t in top]
        assert probs == sorted(probs, reverse=True)
        assert all(0.0 <= p <= 1.0 for p in probs)
        assert sum(probs) <= 1.0 + 1e-5
    assert by_wnid["n01440764"]["top"][0]["probability"] > 0.9


def test_predict_reads_an_image_piped_to_standard_input():
    wnid, (name, index, label) = next(iter(SUBSET.items()))
    command = [sys.executable, "-m", "squeezenet.cli.main", "predict", "-w", str(DC_WEIGHTS), "-", "-k", "1", "--json"]
    piped = subprocess.run(
        command, input=(IMAGENET_SAMPLES / wnid / name).read_bytes(), capture_output=True, timeout=300
    )
    assert piped.returncode == 0, piped.stderr
    (top,) = json.loads(piped.stdout)["top"]
    assert (top["index"], top["class"]) == (index, label)


def test_predict_from_a_terminal_standard_input_is_refused_not_awaited(monkeypatch):
    from squeezenet.data import folders

    monkeypatch.setattr(folders.os, "isatty", lambda fd: fd == 0)
    with pytest.raises(DataError, match="standard input is a terminal; pipe an image in"):
        folders.find_images(["-"])


def test_predict_files_with_converted_weights_matches(predictions):
    files, folder = predictions["files"], predictions["folder"]
    assert len(files) == 3
    by_path = {p["path"].split("/")[-1]: p["top"] for p in folder}
    for pred in files:
        top = pred["top"]
        assert len(top) == 3
        expected = by_path[pred["path"].split("/")[-1]][:3]
        assert [t["index"] for t in top] == [t["index"] for t in expected]
        assert [t["class"] for t in top] == [t["class"] for t in expected]
        assert [t["probability"] for t in top] == pytest.approx([t["probability"] for t in expected], abs=1e-5)
        assert sum(t["probability"] for t in top) <= 1.0 + 1e-5
    assert files[0]["top"][0]["index"] == 0  # sorted: the tench comes first


def test_eval_imagenet_folder_anywhere_without_a_class_list(dc_weights_path, subset, tmp_path, monkeypatch):
    """The release file copied away from the shared data (no imagenet_classes.tsv beside or
    above it or the images, no environment variable): the wnids ship in the package."""
    monkeypatch.delenv("SQUEEZENET_IMAGENET_CLASSES", raising=False)
    lonely = tmp_path / "somewhere" / "compressed_SqueezeNet.net"
    lonely.parent.mkdir()
    shutil.copyfile(dc_weights_path, lonely)
    assert not any(p.name == "imagenet_classes.tsv" for p in (*tmp_path.rglob("*"), *subset.parent.rglob("*")))
    result = ok_json(run_cli("eval", "--weights", str(lonely), "--data", str(subset), "--json", "-j", "0"))
    assert (result["n"], result["top1"]) == (3, 1.0)


def test_imagenet_class_list_override(dc_weights_path, subset, tmp_path, monkeypatch):
    """$SQUEEZENET_IMAGENET_CLASSES still wins: a list in reverse order moves every label."""
    from squeezenet.inference import evaluate_dataset
    from squeezenet.weights import build_model_from_weights, imagenet_wnids

    reversed_list = tmp_path / "reversed.tsv"
    reversed_list.write_text("\n".join(reversed(imagenet_wnids())) + "\n")
    monkeypatch.setenv("SQUEEZENET_IMAGENET_CLASSES", str(reversed_list))
    model = build_model_from_weights(dc_weights_path)
    assert model.weights_info.wnids[0] == "n15075141"  # the last ImageNet class, first in the override
    result = evaluate_dataset(model, subset, workers=0)
    assert (result.n, result.top1) == (3, 0.0)
    monkeypatch.setenv("SQUEEZENET_IMAGENET_CLASSES", str(tmp_path / "missing.tsv"))
    with pytest.raises(DataError, match=r"missing\.tsv: cannot read class list"):
        build_model_from_weights(dc_weights_path)
