"""Bad input: every failure a user can cause is one ``squeezenet: error:`` line and a non-zero exit.

A few cases run the real entry point in a subprocess (so import-time or worker-process
output would show); the rest call ``squeezenet.cli.main.main`` in-process, which is the
same code path without seconds of interpreter start-up each.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import cli_in_process as cli
from conftest import run_cli
from squeezenet.errors import WeightsError
from squeezenet.weights import build_model_from_weights, load_weights, write_safetensors

TENCH = "n01440764/n01440764_tench.JPEG"
FIG = "n07753113/n07753113_fig.JPEG"


def assert_one_error_line(rc, err: str, *fragments: str) -> str:
    assert rc not in (0, None), err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("squeezenet: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def bad(dc_weights_path, tmp_path_factory):
    """A folder of broken and foreign weights files, made once."""
    root = tmp_path_factory.mktemp("bad")
    data = dc_weights_path.read_bytes()
    (root / "truncated.net").write_bytes(data[: len(data) // 2])
    (root / "random.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    good_st = write_safetensors(load_weights(dc_weights_path), root / "good.safetensors")
    st = good_st.read_bytes()
    header_len = int.from_bytes(st[:8], "little")
    flipped = bytearray(st)
    flipped[7] ^= 0xFF  # header length's top byte: points far past the end of the file
    (root / "flipped-length.safetensors").write_bytes(bytes(flipped))
    broken_json = bytearray(st)
    broken_json[8 + header_len // 2 : 8 + header_len // 2 + 4] = b"\x00\xff}{"
    (root / "broken-header.safetensors").write_bytes(bytes(broken_json))
    (root / "truncated.safetensors").write_bytes(st[: len(st) // 2])
    assert st.count(b'"num_classes":"1000"') == 1
    (root / "bad-metadata.safetensors").write_bytes(st.replace(b'"num_classes":"1000"', b'"num_classes":"10x0"'))
    (root / "wrong-classes.safetensors").write_bytes(st.replace(b'"num_classes":"1000"', b'"num_classes":"0010"'))
    Image.new("RGB", (32, 32), (9, 9, 9)).save(root / "image.png")
    (root / "notes.txt").write_text("these are not weights\n" * 10)
    return root


# --- weights files ----------------------------------------------------------------------


@pytest.mark.slow
def test_truncated_weights_subprocess(bad, imagenet_samples):
    proc = run_cli("predict", str(imagenet_samples / TENCH), "--weights", str(bad / "truncated.net"))
    assert proc.stdout == ""
    assert_one_error_line(proc.returncode, proc.stderr, "truncated.net")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("truncated.net", "unrecognised weights format"),
        ("random.bin", "random.bin"),
        ("flipped-length.safetensors", "unrecognised weights format"),
        ("broken-header.safetensors", "corrupted or truncated safetensors"),
        ("truncated.safetensors", "corrupted or truncated safetensors"),
        ("bad-metadata.safetensors", "damaged squeezenet metadata"),
        ("wrong-classes.safetensors", "do not fit"),
        ("image.png", "unrecognised weights format"),
        ("notes.txt", "unrecognised weights format"),
        ("missing.pth", "no such weights file"),
    ],
)
def test_bad_weights_files(capsys, bad, imagenet_samples, name, expected):
    rc, out, err = cli(capsys, "predict", imagenet_samples / TENCH, "--weights", bad / name)
    assert out == ""
    line = assert_one_error_line(rc, err, expected)
    if expected != "do not fit":
        assert name in line  # the message names the culprit
    with pytest.raises(WeightsError):
        build_model_from_weights(bad / name)


def test_convert_bad_weights_writes_nothing(capsys, bad, tmp_path):
    rc, _, err = cli(capsys, "convert", bad / "random.bin", "-o", tmp_path / "out.safetensors")
    assert_one_error_line(rc, err)
    assert list(tmp_path.iterdir()) == []


def test_arch_mismatch(capsys, dc_weights_path, imagenet_samples):
    rc, out, err = cli(
        capsys, "predict", imagenet_samples / TENCH, "--weights", dc_weights_path, "--arch", "squeezenet1_1"
    )
    assert out == ""
    assert_one_error_line(rc, err, "do not fit")


def test_class_count_mismatch_api(dc_weights_path):
    with pytest.raises(WeightsError, match="1000 classes, not 10") as info:
        build_model_from_weights(dc_weights_path, num_classes=10)
    assert "\n" not in str(info.value)


def test_convert_onto_its_own_input(capsys, dc_weights_path, tmp_path):
    copy = tmp_path / "w.net"
    shutil.copyfile(dc_weights_path, copy)
    before = copy.read_bytes()
    rc, _, err = cli(capsys, "convert", copy, "-o", copy)
    assert_one_error_line(rc, err, "overwrite the input")
    assert copy.read_bytes() == before
    rc, _, err = cli(capsys, "convert", copy, "-o", tmp_path)
    assert_one_error_line(rc, err, "is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.net"]


# --- info -------------------------------------------------------------------------------


def test_info_unknown_arch(capsys):
    rc, out, err = cli(capsys, "info", "squeezenet9")
    assert out == ""
    assert_one_error_line(rc, err, "unknown model 'squeezenet9'")


def test_info_size_too_small(capsys):
    rc, out, err = cli(capsys, "info", "squeezenet1_0", "--size", "10")
    assert out == ""
    assert_one_error_line(rc, err, "--size 10", "21")


def test_unknown_command_is_one_line(capsys):
    rc, out, err = cli(capsys, "frobnicate")
    assert rc == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("squeezenet: error:")


# --- images and data folders ------------------------------------------------------------


@pytest.mark.slow
def test_predict_only_file_is_not_an_image_subprocess(tmp_path, dc_weights_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("not a photo")
    proc = run_cli("predict", str(fake), "--weights", str(dc_weights_path))
    assert proc.stdout == ""
    assert_one_error_line(proc.returncode, proc.stderr, "photo.jpg")


def test_predict_mixed_folder_scores_good_images(capsys, tmp_path, dc_weights_path, imagenet_samples):
    shutil.copyfile(imagenet_samples / TENCH, tmp_path / "a_tench.JPEG")
    shutil.copyfile(imagenet_samples / FIG, tmp_path / "c_fig.JPEG")
    (tmp_path / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    rc, out, err = cli(capsys, "predict", tmp_path, "--weights", dc_weights_path, "--json")
    assert rc == 0, err
    results = {json.loads(line)["path"].split("/")[-1]: json.loads(line) for line in out.splitlines()}
    assert results["a_tench.JPEG"]["top"][0]["index"] == 0
    assert results["c_fig.JPEG"]["top"][0]["index"] == 952
    assert "b_broken.jpg" in results["b_broken.jpg"]["error"]
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("squeezenet: warning:")
    assert "b_broken.jpg" in lines[0]


def test_predict_all_bad_files_is_one_error(capsys, tmp_path, dc_weights_path):
    for name in ("x.jpg", "y.png"):
        (tmp_path / name).write_bytes(b"nothing")
    rc, out, err = cli(capsys, "predict", tmp_path, "--weights", dc_weights_path)
    assert out == ""
    assert_one_error_line(rc, err, "none of the 2 images")


@pytest.mark.slow
def test_eval_corrupt_jpeg_among_good_subprocess(tmp_path, dc_weights_path, imagenet_samples):
    root = tmp_path / "val"
    for rel in (TENCH, FIG):
        (root / rel).parent.mkdir(parents=True)
        shutil.copyfile(imagenet_samples / rel, root / rel)
    good = (imagenet_samples / FIG).read_bytes()
    (root / "n07753113" / "n07753113_cut.JPEG").write_bytes(good[: len(good) // 3])
    (root / "n01440764" / "n01440764_junk.JPEG").write_bytes(b"\x00" * 100)
    proc = run_cli("eval", "--weights", str(dc_weights_path), "--data", str(root), "--json", "-j", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["n"] == 2
    assert result["skipped"] == 2
    assert result["top1"] == 1.0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("squeezenet:")]
    warnings = [line for line in ours if line.startswith("squeezenet: warning:")]
    assert len(ours) == len(warnings) == 2, proc.stderr
    assert any("n07753113_cut.JPEG" in line for line in warnings)
    assert any("n01440764_junk.JPEG" in line for line in warnings)


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_missing_data_path(capsys, tmp_path, dc_weights_path, command):
    target = tmp_path / "nowhere"
    args = ["--data", target, "-j", "0"] if command == "eval" else [target]
    rc, out, err = cli(capsys, command, *args, "--weights", dc_weights_path)
    assert out == ""
    assert_one_error_line(rc, err, "nowhere")


@pytest.mark.parametrize(
    ("command", "expected"), [("eval", "expected one sub-folder per class"), ("predict", "no image files")]
)
def test_empty_folder(capsys, tmp_path, dc_weights_path, command, expected):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--data", empty, "-j", "0"] if command == "eval" else [empty]
    rc, out, err = cli(capsys, command, *args, "--weights", dc_weights_path)
    assert out == ""
    assert_one_error_line(rc, err, expected)


def test_eval_folders_that_name_no_class(capsys, tmp_path, dc_weights_path):
    (tmp_path / "kittens").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "kittens" / "a.png")
    rc, out, err = cli(capsys, "eval", "--weights", dc_weights_path, "--data", tmp_path, "-j", "0")
    assert out == ""
    assert_one_error_line(rc, err, "name no class", "kittens")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["eval", "--data", ".", "-b", "0"], "argument --batch-size/-b: must be at least 1, got 0"),
        (["eval", "--data", ".", "-j", "-1"], "argument --workers/-j: must be at least 0, got -1"),
        (["eval", "--data", ".", "--threads", "0"], "argument --threads: must be at least 1, got 0"),
        (["predict", ".", "--topk", "0"], "argument --topk/-k: must be at least 1, got 0"),
        (["predict", ".", "--threads", "two"], "argument --threads: expected a whole number >= 1, got 'two'"),
        (["export", "--output", "m.onnx", "--threads", "-1"], "argument --threads: must be at least 1, got -1"),
        (
            ["compress", "--output", "m.sqz", "--large-bits", "0"],
            "argument --large-bits: bits must lie in [1, 12], got 0",
        ),
        (
            ["compress", "--output", "m.sqz", "--density", "half"],
            "argument --density: expected a number in (0, 1] or 'paper', got 'half'",
        ),
        (["export", "--output", "m.onnx", "--opset", "16"], "argument --opset: must be at least 17, got 16"),
        (["export", "--output", "m.onnx", "--opset", "0"], "argument --opset: must be at least 17, got 0"),
        (["bench", "--threads", "0"], "argument --threads: must be at least 1, got 0"),
    ],
)
def test_counts_below_their_minimum_are_usage_errors(capsys, dc_weights_path, args, fragment):
    """0 or a negative count was read as "not given" (--large-bits 0, --threads 0) or failed
    deep inside PyTorch (--threads -1, --workers -1); now argparse names the option."""
    weights = [] if args[0] == "bench" else ["--weights", dc_weights_path]
    rc, out, err = cli(capsys, *args, *weights)
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and f"squeezenet {args[0]}: error: {fragment}" in err, err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["export", "-o", "m.pt", "--format", "torchscript", "--opset", "18"], "--opset: only for the fp32 ONNX"),
        (["export", "-o", "m.onnx", "--int8", "--calibration", ".", "--dynamo"], "--dynamo: only for the fp32 ONNX"),
        (["export", "-o", "m.onnx", "--calibration", "."], "--calibration: only with --int8"),
        (["export", "-o", "m.onnx", "--calibration-method", "minmax"], "--calibration-method: only with --int8"),
        (
            ["compress", "-o", "m.sqz", "--lossless", "--bits", "4"],
            "--lossless keeps every value exactly; it takes no --bits",
        ),
        (["compress", "-o", "m.sqz", "--lossless", "--density", "0.5"], "it takes no --density"),
        (["compress", "-o", "m.sqz", "--unlabelled"], "--unlabelled: only with --data"),
        (["compress", "-o", "m.sqz", "--train-steps", "50"], "--train-steps: only with --data"),
    ],
)
def test_options_the_others_make_meaningless(capsys, tmp_path, monkeypatch, dc_weights_path, args, fragment):
    """Each was silently ignored (or, for --lossless --bits, silently not lossless)."""
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(capsys, *args, "--weights", dc_weights_path)
    assert out == ""
    assert_one_error_line(rc, err, fragment)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_export_opset_below_the_minimum_in_the_library(tmp_path, dc_model):
    """The CLI refuses it at parse time; the library says the same to a Python caller."""
    from squeezenet.errors import DeployError
    from squeezenet.export.onnx import export_onnx

    with pytest.raises(DeployError, match="opset 16 is too old; use 17 or newer"):
        export_onnx(dc_model, tmp_path / "m.onnx", opset=16)
    assert not (tmp_path / "m.onnx").exists()


def test_eval_train_split_of_a_plain_class_tree(capsys, dc_weights_path, imagenet_samples):
    rc, out, err = cli(capsys, "eval", "-w", dc_weights_path, "-d", imagenet_samples, "--split", "train")
    assert out == ""
    assert_one_error_line(rc, err, "a tree of class folders has no 'train' split; it is scored whole")


def test_bench_size_below_the_models_minimum(capsys):
    rc, out, err = cli(capsys, "bench", "--size", "3", "--arch", "squeezenet1_1", "--engines", "default", "--quick")
    assert out == ""
    assert_one_error_line(rc, err, "--size 3 is below squeezenet1_1's minimum input of")


def test_eval_report_folder_that_is_a_file_fails_before_evaluating(capsys, tmp_path, dc_weights_path, imagenet_samples):
    """It used to evaluate every image, then warn that the report could not be written (exit 0)."""
    taken = tmp_path / "report"
    taken.write_text("mine\n")
    rc, out, err = cli(capsys, "eval", "-w", dc_weights_path, "-d", imagenet_samples, "--per-class", taken)
    assert out == ""
    assert_one_error_line(rc, err, "report: exists and is not a folder")
    assert taken.read_text() == "mine\n"


def test_plot_output_that_is_a_file(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 0, "train_loss": 1.0, "lr": 0.1}\n')
    (tmp_path / "taken").write_text("mine\n")
    rc, _, err = cli(capsys, "plot", run, "--output", tmp_path / "taken")
    assert_one_error_line(rc, err, "taken: exists and is not a folder")
