"""One home for ImageNet's normalisation constants: ``squeezenet/data/pixels.py``.

A mean or std typed again elsewhere is a copy that can drift (four files had one as a fallback
of their own preprocessing): every reader takes them from pixels.py, or from the weights'
preprocessing, which pixels.py fills in.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

IMAGENET_VALUES = {0.485, 0.456, 0.406, 0.229, 0.224, 0.225}
HOME = ROOT / "src" / "squeezenet" / "data" / "pixels.py"
SCANNED = [ROOT / "src", ROOT / "benchmarks"]
# a JS array literal with one of the values among its items
JS_ARRAY = re.compile(r"\[[^\[\]]*(?<![\d.])0\.(?:485|456|406|229|224|225)(?!\d)[^\[\]]*\]")


def _python_copies(path: Path) -> list[str]:
    """Tuple and list literals of ``path`` that hold one of the values, as 'file:line'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Tuple | ast.List):
            values = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, float)}
            if values & IMAGENET_VALUES:
                found.append(f"{path}:{node.lineno}")
    return found


def _js_copies(path: Path) -> list[str]:
    text = path.read_text()
    return [f"{path}:{text.count(chr(10), 0, m.start()) + 1}" for m in JS_ARRAY.finditer(text)]


def copies_under(*folders: Path) -> list[str]:
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.resolve() == HOME.resolve() or not path.is_file():
                continue
            if path.suffix == ".py":
                found += _python_copies(path)
            elif path.suffix in (".js", ".mjs", ".html"):
                found += _js_copies(path)
    return found


def test_imagenet_mean_and_std_are_typed_only_in_pixels_py():
    assert copies_under(*SCANNED) == [], "import IMAGENET_MEAN / IMAGENET_STD from squeezenet.data.pixels"


def test_the_check_sees_the_copies_there_were(tmp_path):
    """The fallbacks this tree had (server, runtime, page), and nothing that merely looks alike."""
    (tmp_path / "server.py").write_text('mean = np.asarray(pre.get("mean", (0.485, 0.456, 0.406)), np.float32)\n')
    (tmp_path / "runtime.py").write_text('x = 1\nstd = p.get("std", [0.229, 0.224, 0.225])\n')
    (tmp_path / "page.js").write_text("const a = 1;\nconst std = pre.std ?? [0.229, 0.224, 0.225];\n")
    (tmp_path / "fine.py").write_text("scale = (0.4851, 1.229)\nratio = 0.485\n")
    (tmp_path / "fine.js").write_text("const xs = [10.485, 0.2245];\n")
    found = copies_under(tmp_path)
    assert found == [f"{tmp_path / 'page.js'}:2", f"{tmp_path / 'runtime.py'}:2", f"{tmp_path / 'server.py'}:1"]


def test_pixels_py_holds_the_values():
    from squeezenet.data.pixels import IMAGENET_MEAN, IMAGENET_STD

    assert set(IMAGENET_MEAN) | set(IMAGENET_STD) == IMAGENET_VALUES


def test_the_page_takes_every_setting_from_the_model_card():
    """preprocess.js has no default of its own (``pre.crop ?? 224``): the card (/v1/model)
    carries the whole Preprocessing, so a fallback could only disagree with pixels.py."""
    page = (ROOT / "src" / "squeezenet" / "data" / "preprocess.js").read_text()
    assert re.findall(r"\bpre\.\w+\s*(?:\?\?|\|\|)", page) == []


# the choices whose default has one home each: a function parameter, a dataclass field or an
# ``x or "..."`` fallback that types one of them again is a second default that can drift
PACKAGE = ROOT / "src" / "squeezenet"
DEFAULT_HOMES = {
    "export.formats.DEFAULT_CALIBRATION_METHOD": (PACKAGE / "export/formats.py", {"percentile", "minmax", "entropy"}),
    "compression.choices.DEFAULT_METHOD": (PACKAGE / "compression/choices.py", {"nearest", "output-aware"}),
}
MAGIC_HOME = ROOT / "src" / "squeezenet" / "weights" / "sqz_codec" / "constants.py"


def _typed_defaults(path: Path, values: set[str]) -> list[str]:
    """Places in ``path`` where one of ``values`` is written as a default."""
    found = []

    def literal(node) -> bool:
        return isinstance(node, ast.Constant) and node.value in values

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        defaults = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            defaults = [*node.args.defaults, *node.args.kw_defaults]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            defaults = [node.value]  # dataclass fields
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            defaults = node.values[1:]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get" and len(node.args) == 2:
            defaults = [node.args[1]]  # settings.get("method", "...")
        found += [f"{path}:{d.lineno}" for d in defaults if d is not None and literal(d)]
    return found


def _python_files(*folders: Path):
    for folder in folders:
        yield from sorted(folder.rglob("*.py"))


def test_each_default_choice_is_typed_once():
    scanned = [ROOT / "src", ROOT / "benchmarks", ROOT / "scripts"]
    for name, (home, values) in DEFAULT_HOMES.items():
        copies = [c for path in _python_files(*scanned) if path != home for c in _typed_defaults(path, values)]
        assert copies == [], f"import {name} instead"


def test_the_sqz_magic_is_typed_once():
    magic = b"SQZ\x00"
    copies = []
    for path in _python_files(ROOT / "src", ROOT / "benchmarks", ROOT / "scripts"):
        if path == MAGIC_HOME:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, bytes) and node.value.startswith(magic):
                copies.append(f"{path}:{node.lineno}")
    assert copies == [], "import MAGIC from squeezenet.weights.sqz_codec"
    from squeezenet.weights.sqz_codec import MAGIC

    assert magic == MAGIC


def test_the_default_check_sees_a_typed_default(tmp_path):
    source = (
        'def quantize(model, method: str = "percentile"):\n    pass\n'
        'x = args.calibration_method or "percentile"\n'
        '@dataclass\nclass C:\n    method: str = "nearest"\n'
        'y = pre.get("method", "output-aware")\n'
        'fine = quantize(model, method="percentile")\n'
    )
    (tmp_path / "m.py").write_text(source)
    values = {"percentile", "nearest", "output-aware"}
    assert _typed_defaults(tmp_path / "m.py", values) == [f"{tmp_path / 'm.py'}:{n}" for n in (1, 3, 6, 7)]
