"""C export benchmark: flash, RAM, accuracy and speed of the generated integer C, per model.

    python benchmarks/bench_export_c.py [--cifar-weights PATH] [--rounds 3] [--tiny FOLDER]

Models: the v1.0 release at 227 px (through ``squeezenet compress``'s data-free default into a
.sqz: compressed-weights and int8 builds of it, and an int8 build of the release file itself),
v1.1 at 224 px (random weights: torchvision's v1.1 weights cannot be downloaded here; size, RAM
and speed only), and a CIFAR-10 model at 32 px trained here (--cifar-weights, else a short run
of the CIFAR-10 benchmark's recipe is trained once into benchmarks/runs/export_c_cifar10), int8
and compressed (its .sqz from ``squeezenet compress``).

Images: ImageNet models calibrate on the even-indexed images of imagenet-samples (128, the
export's default limit) and are scored on the 250 odd-indexed ones; the CIFAR-10 model
calibrates on 128 training images and is scored on 500 test images (50 per class).
Measured per build: weight bytes (``size -A`` of the compiled squeezenet_weights.c: .rodata
and .data, x86-64 -O2 and arm-none-eabi -O2), code bytes, the planned arena, the worst stack
chain (gcc -fcallgraph-info=su), top-1 agreement with the fp32 model, bit-exactness against the
NumPy reference (a subset), latency at batch 1 (gcc -O3 -march=native, one thread) as a ratio
to ONNX Runtime fp32 and int8 timed in the same rounds, and the instruction count of a
Cortex-M3 run under QEMU (-icount: one virtual nanosecond per instruction; no cycle model).
Writes benchmarks/results/export_c.{json,md}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import c_toolchain as tc
from _common import DATA, TINY_MOST_PER_CLASS, add_tiny_option, imagenet_halves, machine, tiny_source, write_results
from squeezenet.export.c import build_c, reference, write_folder
from squeezenet.export.c.pixels import crop_pixels, normalized
from squeezenet.export.formats import DEFAULT_SQUEEZE_BITS, DEFAULT_STEM_BITS
from squeezenet.inference.fidelity import fidelity_from_logits
from squeezenet.weights import build_model_from_weights, create_model

RELEASE = DATA / "deepcompression" / "compressed_SqueezeNet.net"
CIFAR = DATA / "cifar10-jpeg.tar.gz"
CIFAR_RUN = Path(__file__).resolve().parent / "runs" / "export_c_cifar10"
HOST_FAST = ("-O3", "-march=native")
PORTABLE = (*HOST_FAST, "-DSQN_VNNI=0")  # the runtime's portable loops on the same CPU
TARGETS = {
    "v1.0 compressed weight bytes": 470_000,
    "v1.1 RAM": 512_000,
    "32 px RAM": 320_000,
    "agreement": 0.98,
    "latency ratio": 3.0,
}


def squeezenet_cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "squeezenet.cli.main", *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return proc.stdout.strip()


# ----------------------------------------------------------------------------- data


def cifar_split(folder: Path, per_class_cal: int, per_class_test: int):
    """A few CIFAR-10 JPEGs per class from the archive: (calibration: train/, test: test/) paths."""
    taken: dict[tuple[str, str], int] = {}
    want = {"train": per_class_cal, "test": per_class_test}
    small = max(want.values()) <= TINY_MOST_PER_CLASS  # the first images of each folder: the cached few
    with tarfile.open(tiny_source(CIFAR) if small else CIFAR, "r|*") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] not in want:
                continue
            key = (parts[-3], parts[-2])
            if taken.get(key, 0) >= want[parts[-3]]:
                continue
            taken[key] = taken.get(key, 0) + 1
            target = folder / parts[-3] / parts[-2] / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return sorted((folder / "train").rglob("*.jpg")), sorted((folder / "test").rglob("*.jpg"))


def trained_cifar(args) -> tuple[Path, str]:
    """--cifar-weights, else the weights of an earlier run of this script, else a short training run now."""
    if args.cifar_weights:
        given = Path(args.cifar_weights)
        metrics = given.parent / "metrics.csv"
        if not metrics.exists():
            return given, f"given: {args.cifar_weights}"
        return given, f"given: {args.cifar_weights} ({_run_summary(metrics)})"
    run = args.tiny / "cifar_run" if args.tiny else CIFAR_RUN
    weights = run / "best.safetensors"
    if not weights.exists():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_train_cifar10 import cifar_config
        from squeezenet.training import train

        data = CIFAR
        if args.tiny:
            from _common import tiny_archive

            data = tiny_archive(CIFAR, args.tiny / "cifar10-tiny.tar", per_class=8)
        train(
            cifar_config(
                data=str(data),
                output=str(run),
                epochs=1,
                batch_size=8 if args.tiny else 256,
                lr=0.2,
                workers=1,
                augment="light",
                width="base",
            )
        )
    return weights, (
        f"trained here (bench_train_cifar10's recipe, base width, light augmentation), "
        f"{_run_summary(run / 'metrics.csv')}: a quickly trained model, not the benchmark's 90 %"
    )


def _run_summary(metrics: Path) -> str:
    """How far a training run went, from its metrics.csv (the last line): epochs and validation top-1."""
    lines = metrics.read_text().splitlines()
    last = dict(zip(lines[0].split(","), lines[-1].split(","), strict=True))
    return f"{int(last['epoch']) + 1} epoch(s), validation top-1 {float(last['val_top1']):.1%} at the last"


# ----------------------------------------------------------------------------- measurements


def fp32_scores(model, pre, pixels: np.ndarray, batch: int = 16) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            out.append(model(torch.from_numpy(normalized(pre, pixels[i : i + batch]))).numpy())
    return np.concatenate(out)


def c_scores(folder: Path, pixels: np.ndarray, work: Path) -> np.ndarray:
    exe = tc.compile_host(folder, tc.file_harness_source(), work / "score", "gcc", HOST_FAST)
    raw = work / "images.raw"
    raw.write_bytes(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
    return tc.run_program([str(exe), str(raw)]).scores


def ort_median_ms(session, x: np.ndarray, runs: int) -> float:
    name = session.get_inputs()[0].name
    session.run(None, {name: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def latency(
    folder: Path,
    model,
    pre,
    pixels: np.ndarray,
    calibration: np.ndarray,
    work: Path,
    rounds: int,
    runs: int,
    int8: bool,
):
    """Median ms at batch 1 of the C build and ONNX Runtime fp32 (default threads and one) and
    int8, timed in alternating blocks in each round; ratios are taken per round, then the median.
    An int8 build that takes the AVX-512 VNNI path is also timed with it turned off."""
    from squeezenet.export.onnx import onnx_bytes, ort_session
    from squeezenet.export.onnx_int8 import quantize_model

    harness = tc.harness_source(pixels[:1], repeat=runs)
    builds = {"c": tc.compile_host(folder, harness, work / "time", "gcc", HOST_FAST)}
    vnni = int8 and tc.takes_vnni_path("gcc", HOST_FAST)
    if vnni:  # the same CPU without the fast path, for comparison
        builds["c_portable"] = tc.compile_host(folder, harness, work / "time_portable", "gcc", PORTABLE)
    size = pixels.shape[1]
    fp32 = onnx_bytes(model, size=size, metadata=False)
    int8_path = quantize_model(model, work / "int8.onnx", normalized(pre, calibration), size=size)
    sessions = {
        "ort_fp32": ort_session(fp32),
        "ort_fp32_1thread": ort_session(fp32, threads=1),
        "ort_int8": ort_session(int8_path),
    }
    x = normalized(pre, pixels[:1])
    per_round = []
    for _ in range(rounds):
        row = {name: tc.run_program([str(exe)]).median_ms for name, exe in builds.items()}
        row.update({name: ort_median_ms(s, x, runs) for name, s in sessions.items()})
        per_round.append(row)
    keys = per_round[0]
    out = {f"{k}_ms": float(np.median([r[k] for r in per_round])) for k in keys}
    for c in builds:
        for k in sessions:  # > 1: C slower
            out[f"{c}_vs_{k}"] = float(np.median([r[c] / r[k] for r in per_round]))
    out["c_kernels"] = "AVX-512 VNNI" if vnni else "portable C"
    out["threads_ort_default"] = torch.get_num_threads()
    return out


def _ram_terms(row: dict) -> str:
    return "arena + descriptors + stack" if "descriptor_ram_bytes" in row else "arena + stack"


def sizes(folder: Path, work: Path) -> dict:
    host_w = tc.section_sizes(tc.compile_object(folder / "squeezenet_weights.c", work / "w.o"))
    host_m = tc.section_sizes(tc.compile_object(folder / "squeezenet_model.c", work / "m.o"))
    arm = (f"-mcpu={tc.ARM_CPU}", "-mthumb", "-O2")
    arm_w = tc.section_sizes(
        tc.compile_object(folder / "squeezenet_weights.c", work / "w.arm.o", "arm-none-eabi-gcc", arm),
        "arm-none-eabi-size",
    )
    arm_m = tc.section_sizes(
        tc.compile_object(folder / "squeezenet_model.c", work / "m.arm.o", "arm-none-eabi-gcc", arm),
        "arm-none-eabi-size",
    )
    return {
        "weight_bytes_x86_64": tc.data_bytes(host_w),
        "weight_bytes_arm": tc.data_bytes(arm_w),
        "runtime_code_bytes_x86_64": host_m.get(".text", 0),
        "runtime_code_bytes_arm": arm_m.get(".text", 0),
        "runtime_const_bytes_arm": tc.data_bytes(arm_m),
        "static_ram_bytes_arm": tc.static_ram_bytes(arm_m),
        "stack_bytes_x86_64": tc.stack_usage(folder)["worst_chain_bytes"],
        "stack_bytes_arm": tc.stack_usage(folder, "arm-none-eabi-gcc", arm)["worst_chain_bytes"],
    }


def cortex_m(folder: Path, pixels: np.ndarray, work: Path, expected: np.ndarray) -> dict:
    elf = tc.build_arm(folder, tc.harness_source(pixels), work / "run.elf")
    start = time.perf_counter()
    got = tc.run_qemu(elf, timeout=1800)
    return {
        "images": len(pixels),
        "same_scores_as_host": bool(np.array_equal(got.scores, expected)),
        "instructions_per_image": [int(v) for v in got.instructions],
        "qemu_seconds": round(time.perf_counter() - start, 1),
        "machine": f"qemu-system-arm -machine {tc.ARM_MACHINE} ({tc.ARM_CPU}) -icount shift=0",
    }


def evaluate(
    name: str,
    model,
    storage: str,
    compressed_source: bool,
    cal_px,
    test_px,
    labels,
    work: Path,
    args,
    fp32_name: str,
    arm_images: int = 0,
    time_it: bool = True,
    bits: tuple[int, int] = (DEFAULT_STEM_BITS, DEFAULT_SQUEEZE_BITS),
) -> dict:
    pre = model.weights_info.preprocessing
    folder = work / name.replace(" ", "_").replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    net, files, facts = build_c(
        model,
        normalized(pre, cal_px),
        storage=storage,
        weights_are_compressed=compressed_source,
        stem_bits=bits[0],
        squeeze_bits=bits[1],
    )
    export_s = time.perf_counter() - start
    write_folder(files, folder / "src")
    row = {
        "model": name,
        "arch": net.arch,
        "input": net.size,
        "weights": net.storage,
        "stem_bits": bits[0],
        "squeeze_bits": bits[1],
        "export_seconds": round(export_s, 1),
        "calibration_images": len(cal_px),
        "scored_images": len(test_px),
        "arena_bytes": facts["arena_bytes"],
        "fp32_reference": fp32_name,
    }
    row.update(sizes(folder / "src", folder))
    # beside the arena: the descriptors the weight table is bound into (RAM since the weights are a table)
    row["descriptor_ram_bytes"] = row["static_ram_bytes_arm"] - row["arena_bytes"]
    stack = max(row["stack_bytes_x86_64"], row["stack_bytes_arm"])
    row["ram_bytes"] = row["arena_bytes"] + row["descriptor_ram_bytes"] + stack
    scores = c_scores(folder / "src", test_px, folder)
    checked = min(len(test_px), 4 if args.tiny else 16)
    row["bit_exact_vs_reference"] = {
        "images": checked,
        "equal": bool(np.array_equal(scores[:checked], reference.run_batch(net, test_px[:checked]))),
    }
    # the mean KL is finer than top-1 agreement on a few hundred images; float64: the integer scores scaled
    fidelity = fidelity_from_logits(fp32_scores(model, pre, test_px), scores * net.score_scale, labels)
    row["top1_agreement_with_fp32"] = fidelity.agreement
    row["kl_vs_fp32"] = fidelity.mean_kl
    if labels is not None:
        row["top1_fp32"] = fidelity.reference_top1
        row["top1_c"] = fidelity.top1
    if time_it:
        row["latency"] = latency(
            folder / "src", model, pre, test_px, cal_px, folder, args.rounds, args.runs, storage == "int8"
        )
    if arm_images:
        row["cortex_m3"] = cortex_m(folder / "src", test_px[:arm_images], folder, scores[:arm_images])
    row["_scores"] = scores
    print(f"{name}: done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return row


def noise_floor(model, pre, pixels: np.ndarray, amplitude: float = 1.0, seeds: int = 3) -> list[float]:
    """fp32 against itself with imperceptible uniform noise (+-amplitude pixel levels) on its input."""
    clean = fp32_scores(model, pre, pixels)
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        x = torch.from_numpy(normalized(pre, pixels))
        noise = rng.uniform(-amplitude, amplitude, x.shape).astype(np.float32)
        scale = np.array(pre.std, np.float32)[None, :, None, None] * (255.0 if pre.pixel_range == 1.0 else 1.0)
        with torch.no_grad():
            noisy = model(x + torch.from_numpy(noise / scale)).numpy()
        out.append(fidelity_from_logits(clean, noisy).agreement)
    return out


# ----------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    m = report["machine"]
    rows = report["models"]
    lines = [
        "# C export: flash, RAM, agreement and speed of the generated integer C",
        "",
        f"Machine: {m.get('cpu', 'CPU')}, {m['cores']} cores, "
        f"{'shared with other work' if report.get('shared') else 'no other job running'} while measuring; {m['date']}. "
        f"gcc -O3 -march=native, one thread; ONNX Runtime {report['onnxruntime']} with its default "
        f"{rows[0].get('latency', {}).get('threads_ort_default', '?')} threads and with one.",
        f"Command: `python benchmarks/bench_export_c.py {report['argv']}`".rstrip(),
        "",
        f"The .sqz files: `{report['sqz_command']}` -> {report['sqz_bytes']:,} bytes (v1.0); "
        f"`{report['cifar_sqz_command']}` (CIFAR-10). CIFAR-10 weights: {report['cifar_weights']}.",
        f"Images: {report['images']}",
        "",
        "## Targets",
        "",
        "| check | measured | target | verdict |",
        "|---|---:|---:|---|",
    ]
    for t in report["targets"]:
        lines.append(f"| {t['check']} | {t['measured']} | {t['target']} | {t['verdict']} |")
    lines += [
        "",
        "<!-- details -->",
        "",
        "## Flash and RAM (bytes)",
        "",
        "Weight bytes: `.rodata` + `.data` of the compiled squeezenet_weights.c (every weight table; class names "
        "live in squeezenet_labels.c and are not counted). Runtime: squeezenet_model.c's code and its own const data "
        "(since the weights are a table apart, the descriptors are RAM: the next column). RAM: the static arena, "
        "the descriptors the table is bound into (Cortex-M3 `.data` + `.bss` beyond the arena) and the worst stack "
        "chain (gcc -fcallgraph-info=su).",
        "",
        "| model | weights | weight bytes x86-64 | weight bytes Cortex-M3 | runtime code / const Cortex-M3 | arena | "
        "descriptors | stack x86-64 / Cortex-M3 | RAM |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        descriptors = f"{r['descriptor_ram_bytes']:,}" if "descriptor_ram_bytes" in r else "(in flash)"
        lines.append(
            f"| {r['model']} | {r['weights']} | {r['weight_bytes_x86_64']:,} | {r['weight_bytes_arm']:,} | "
            f"{r['runtime_code_bytes_arm']:,} / {r['runtime_const_bytes_arm']:,} | {r['arena_bytes']:,} | "
            f"{descriptors} | {r['stack_bytes_x86_64']} / {r['stack_bytes_arm']} | {r['ram_bytes']:,} |"
        )
    lines += [
        "",
        "## Agreement with the fp32 model, and accuracy",
        "",
        "Bits: `--stem-bits` / `--squeeze-bits` of the build (12, the default: conv1's output and the squeeze "
        "outputs as uint16; 8: uint8). KL: mean KL divergence of the C model's softmax from the fp32 model's, on "
        "the same images.",
        "",
        "| model | bits conv1 / squeeze | fp32 model compared | scored images | top-1 agreement | KL | fp32 top-1 | "
        "C top-1 | bit-exact vs NumPy reference |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        exact = r["bit_exact_vs_reference"]
        fp, c = r.get("top1_fp32"), r.get("top1_c")
        lines.append(
            f"| {r['model']} | {r['stem_bits']} / {r['squeeze_bits']} | {r['fp32_reference']} | {r['scored_images']} | "
            f"{r['top1_agreement_with_fp32']:.1%} | {r['kl_vs_fp32']:.4f} | "
            f"{'' if fp is None else f'{fp:.1%}'} | {'' if c is None else f'{c:.1%}'} | "
            f"{'yes' if exact['equal'] else 'NO'} ({exact['images']} images) |"
        )
    nf = report["noise_floor"]
    lines += [
        "",
        f"Noise floor: the fp32 v1.0 release against itself with uniform noise of +-1 pixel level on its input "
        f"(invisible) agrees on {', '.join(f'{v:.1%}' for v in nf['agreement'])} of the same {nf['images']} images "
        f"(three seeds); +-0.5 levels: {', '.join(f'{v:.1%}' for v in nf['agreement_half'])}.",
        "",
        "## Latency at batch 1 (ms, median; ratio > 1: C slower)",
        "",
        "C: the build `gcc -O3 -march=native` makes on this CPU (its kernels named); C portable: the same with "
        "`-DSQN_VNNI=0` (the plain C99 loops every other target runs), where the two differ.",
        "",
        "| model | C kernels | C | C portable | ORT fp32 | ORT fp32 1 thread | ORT int8 | C / ORT fp32 | "
        "C portable / ORT fp32 | C / ORT fp32 1 thread | C / ORT int8 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = r.get("latency")
        if t:
            portable = f"{t['c_portable_ms']:.2f}" if "c_portable_ms" in t else ""
            portable_ratio = f"{t['c_portable_vs_ort_fp32']:.2f}x" if portable else ""
            lines.append(
                f"| {r['model']} | {t['c_kernels']} | {t['c_ms']:.2f} | {portable} | {t['ort_fp32_ms']:.2f} | "
                f"{t['ort_fp32_1thread_ms']:.2f} | {t['ort_int8_ms']:.2f} | {t['c_vs_ort_fp32']:.2f}x | "
                f"{portable_ratio} | {t['c_vs_ort_fp32_1thread']:.2f}x | {t['c_vs_ort_int8']:.2f}x |"
            )
    lines += [
        "",
        "## Cortex-M3 (QEMU mps2-an385, -icount shift=0: instructions, not cycles)",
        "",
        "| model | weights | images | same scores as the host build | instructions per image | QEMU s |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        a = r.get("cortex_m3")
        if a:
            counts = ", ".join(f"{v / 1e6:.0f} M" for v in a["instructions_per_image"])
            lines.append(
                f"| {r['model']} | {r['weights']} | {a['images']} | {a['same_scores_as_host']} | "
                f"{counts} | {a['qemu_seconds']} |"
            )
    lines += ["", report["notes"]]
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[dict]:
    by = {r["model"]: r for r in rows}
    out = []

    def add(check, measured, target, ok):
        out.append({"check": check, "measured": measured, "target": target, "verdict": "met" if ok else "missed"})

    v10c = by["v1.0 (.sqz) compressed"]  # in every run, the tiny one included
    add(
        "v1.0 compressed: weight bytes (Cortex-M3 / x86-64)",
        f"{v10c['weight_bytes_arm']:,} / {v10c['weight_bytes_x86_64']:,}",
        f"<= {TARGETS['v1.0 compressed weight bytes']:,}",
        max(v10c["weight_bytes_arm"], v10c["weight_bytes_x86_64"]) <= TARGETS["v1.0 compressed weight bytes"],
    )
    v11 = by["v1.1 (random)"]
    add(
        "v1.1 at 224: " + _ram_terms(v11),
        f"{v11['ram_bytes']:,}",
        f"<= {TARGETS['v1.1 RAM']:,}",
        v11["ram_bytes"] <= TARGETS["v1.1 RAM"],
    )
    for r in rows:
        if r["input"] <= 32:
            add(
                f"{r['model']}: " + _ram_terms(r),
                f"{r['ram_bytes']:,}",
                f"<= {TARGETS['32 px RAM']:,}",
                r["ram_bytes"] <= TARGETS["32 px RAM"],
            )
    for r in rows:
        if "random" not in r["model"]:
            add(
                f"{r['model']}: top-1 agreement with fp32 ({r['scored_images']} images)",
                f"{r['top1_agreement_with_fp32']:.1%}",
                f">= {TARGETS['agreement']:.0%}",
                r["top1_agreement_with_fp32"] >= TARGETS["agreement"],
            )
    for r in rows:
        if r.get("latency") and r["weights"] == "int8":
            ratio = r["latency"]["c_vs_ort_fp32"]
            add(
                f"{r['model']}: C int8 latency / ORT fp32",
                f"{ratio:.2f}x",
                f"<= {TARGETS['latency ratio']:.0f}x",
                ratio <= TARGETS["latency ratio"],
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar-weights", help="a CIFAR-10 model trained here (default: train a short run once)")
    ap.add_argument("--rounds", type=int, default=3, help="latency rounds (ratios: median over rounds)")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per engine per round")
    ap.add_argument("--shared", action="store_true", help="say in the results that other jobs shared the CPU")
    add_tiny_option(ap)
    args = ap.parse_args()
    if args.tiny:
        args.tiny.mkdir(parents=True, exist_ok=True)
        args.rounds, args.runs = 1, 2
    import onnxruntime

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sqz = work / "v1_0.sqz"
        # the default (output-aware) compression; the tiny run takes the quick nearest-centroid method
        method = ["--method", "nearest"] if args.tiny else []
        sqz_command = " ".join(["squeezenet compress -w", str(RELEASE), "-o", sqz.name, *method])
        print(squeezenet_cli("compress", "-w", str(RELEASE), "-o", str(sqz), *method), file=sys.stderr)
        n_cal, n_test = (4, 2) if args.tiny else (128, 250)
        cal_files, test_files = imagenet_halves(n_cal, n_test)
        release = build_model_from_weights(RELEASE).eval()
        sqz_model = build_model_from_weights(sqz).eval()
        pre = release.weights_info.preprocessing
        cal_px = np.stack([crop_pixels(pre, f) for f in cal_files])
        test_px = np.stack([crop_pixels(pre, f) for f in test_files])
        wnids = release.weights_info.wnids
        labels = np.array([wnids.index(f.parent.name) for f in test_files])
        rows = []
        arm_v10 = 0 if args.tiny else 1
        rows.append(
            evaluate(
                "v1.0 (.sqz) compressed",
                sqz_model,
                "compressed",
                True,
                cal_px,
                test_px,
                labels,
                work,
                args,
                ".sqz decoded, fp32",
                arm_images=arm_v10,
                time_it=not args.tiny,
            )
        )
        if not args.tiny:  # the tiny run keeps one build of the 227-px model (compiling 1.2 MB of int8 is slow)
            # the .sqz as int8; the release's own 8-bit codebooks run exactly (compressed) and as int8
            # and the release as int8 with every activation uint8 (--stem-bits 8 --squeeze-bits 8: the least RAM)
            default = (DEFAULT_STEM_BITS, DEFAULT_SQUEEZE_BITS)
            for name, model, storage, from_sqz, bits in (
                ("v1.0 (.sqz) int8", sqz_model, "int8", True, default),
                ("v1.0 (release .net) compressed", release, "compressed", False, default),
                ("v1.0 (release .net) int8", release, "int8", False, default),
                ("v1.0 (release .net) int8, uint8 activations", release, "int8", False, (8, 8)),
            ):
                fp32_name = ".sqz decoded, fp32" if from_sqz else "release .net, fp32"
                rows.append(
                    evaluate(
                        name,
                        model,
                        storage,
                        from_sqz,
                        cal_px,
                        test_px,
                        labels,
                        work,
                        args,
                        fp32_name,
                        bits=bits,
                    )
                )
        nf = {
            "images": len(test_px),
            "agreement": noise_floor(release, pre, test_px, 1.0),
            "agreement_half": noise_floor(release, pre, test_px, 0.5),
        }
        # v1.1 at 224, random weights: flash, RAM and speed (agreement of a random model means little)
        v11 = create_model("squeezenet1_1").eval()
        v11_pre = v11_preprocessing()
        v11.weights_info = _info_for(v11, v11_pre)
        rows.append(
            evaluate(
                "v1.1 (random)",
                v11,
                "int8",
                False,
                np.stack([crop_pixels(v11_pre, f) for f in cal_files]),
                np.stack([crop_pixels(v11_pre, f) for f in test_files[:8]]),
                None,
                work,
                args,
                "same random weights, fp32",
                time_it=not args.tiny,
            )
        )
        # CIFAR-10 at 32 px, trained here
        cifar_path, cifar_how = trained_cifar(args)
        cifar_sqz = work / "cifar.sqz"
        cifar_sqz_command = " ".join(["squeezenet compress -w", cifar_path.name, "-o", cifar_sqz.name, *method])
        squeezenet_cli("compress", "-w", str(cifar_path), "-o", str(cifar_sqz), *method)
        cifar = build_model_from_weights(cifar_path).eval()
        cpre = cifar.weights_info.preprocessing
        ccal, ctest = cifar_split(work / "cifar_images", 2 if args.tiny else 13, 1 if args.tiny else 50)
        ccal_px = np.stack([crop_pixels(cpre, f) for f in ccal])[: 4 if args.tiny else 128]
        ctest_px = np.stack([crop_pixels(cpre, f) for f in ctest])
        classes = list(cifar.weights_info.classes)
        clabels = np.array([classes.index(f.parent.name) for f in ctest])
        arm_n = 1 if args.tiny else 4
        rows.append(
            evaluate(
                "CIFAR-10 32 px int8",
                cifar,
                "int8",
                False,
                ccal_px,
                ctest_px,
                clabels,
                work,
                args,
                "trained model, fp32",
                arm_images=arm_n,
            )
        )
        csqz = build_model_from_weights(cifar_sqz).eval()
        rows.append(
            evaluate(
                "CIFAR-10 32 px (.sqz) compressed",
                csqz,
                "compressed",
                True,
                ccal_px,
                ctest_px,
                clabels,
                work,
                args,
                ".sqz decoded, fp32",
                arm_images=arm_n,
            )
        )
        sqz_bytes = sqz.stat().st_size
    for r in rows:
        r.pop("_scores")
    report = {
        "benchmark": "C export (integer C99) of SqueezeNet",
        "machine": machine(),
        "onnxruntime": onnxruntime.__version__,
        "argv": " ".join(sys.argv[1:]),
        "shared": args.shared,
        "sqz_command": sqz_command,
        "sqz_bytes": sqz_bytes,
        "cifar_sqz_command": cifar_sqz_command,
        "cifar_weights": cifar_how,
        "images": (
            f"ImageNet models calibrate on {len(cal_px)} even-indexed imagenet-samples images and are scored on "
            f"{len(test_px)} odd-indexed ones (v1.1: 8); CIFAR-10 calibrates on {len(ccal_px)} training images and "
            f"is scored on {len(ctest_px)} test images. No setting was chosen on the scored images."
        ),
        "models": rows,
        "noise_floor": nf,
        "targets": verdicts(rows),
        "notes": NOTES,
    }
    write_results("export_c", report, markdown(report), args.tiny)


def v11_preprocessing():
    from squeezenet.data.preprocessing import IMAGENET_DEFAULT

    return IMAGENET_DEFAULT


def _info_for(model, pre):
    from squeezenet.weights.info import WeightsInfo

    return WeightsInfo("squeezenet1_1", model.spec, model.num_classes, model.in_chans, pre)


NOTES = """Notes:
- Integer scheme (docs/c-export.md): uint8 activations except conv1's output and the squeeze outputs (12
  bits in uint16 by default, uint8 with --stem-bits 8 --squeeze-bits 8), int32 accumulators,
  requantization by an int32 multiplier and a shift; conv10's uint8 outputs are summed (the average pool's
  scale is in SQUEEZENET_SCORE_SCALE). int8 builds: int8 weights with one scale per output channel,
  rounded for each layer's outputs (error feedback through the covariance of its inputs on the calibration
  images, GPTQ-style). Compressed builds: the weights are the codebook's own values (as wide as the int32
  accumulator allows) with one scale per layer.
- The v1.0 release's top-1 is fragile: the noise-floor line shows fp32 itself changing its answer on up to
  2 % of the images under invisible input noise.
- v1.1 uses random weights (torchvision's v1.1 weights are not available offline): its size, RAM and
  speed are real, its agreement is not reported as a target.
- Latency ratios come from alternating blocks in one run; the C build runs one thread, ONNX Runtime its
  default threads (and one, for comparison). They depend on the CPU: ONNX Runtime uses AVX-512 (and VNNI
  for int8) where the CPU has it. The C int8 build does too when the compiler targets AVX-512 VNNI
  (`-march=native` on such a CPU: dense int8 products on vpdpbusd, the same integers); elsewhere, and in
  compressed builds, its loops are plain C99 that the compiler vectorises."""


if __name__ == "__main__":
    main()
