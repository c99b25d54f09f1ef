"""The layout's rules, checked from the source (docs/architecture.md): imports flow one way, no
import cycle (imports inside functions included), the PyTorch-free parts stay free of it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "squeezenet"
# lowest first: a module may import its own layer and those before it, never one after it
LAYERS = (
    ("errors", "atomic", "bounds", "_lazy"),
    ("data",),
    ("models",),
    ("weights",),
    ("compression",),
    ("export",),
    ("inference",),
    ("training",),
    ("benchmarking",),
    ("serving",),
    ("cli",),
)
STANDALONE = ("runtime",)  # NumPy + Pillow only; loads the .sqz codec by file path


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported_names(path: Path, module: str) -> set[str]:
    """Every squeezenet module ``path`` imports anywhere (functions too), and the modules named
    by a lazy package's ``_EXPORTS`` table (imported on first attribute access)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_EXPORTS" for t in node.targets):
            names.update(v.value for v in node.value.values if isinstance(v, ast.Constant))
    return {n for n in names if n == "squeezenet" or n.startswith("squeezenet.")}


def _edges(module: str) -> set[str]:
    """Modules whose code runs when ``module``'s imports run: each named module and the package
    __init__s above it, except the packages ``module`` itself lives in (already running)."""
    out = set()
    for name in _imported_names(MODULES[module], module):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            target = ".".join(parts[:i])
            if target in MODULES and target != module and not module.startswith(target + "."):
                out.add(target)
    return out


GRAPH = {m: _edges(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else None
    return next((i for i, layer in enumerate(LAYERS) if top in layer), None)


def test_no_import_cycle_between_modules():
    assert _cycles(GRAPH) == []


def test_the_cycle_check_sees_imports_inside_functions(tmp_path):
    """The check itself: an import inside a function is an edge like any other, a lazy
    package's table too, and three modules importing in a ring are one cycle."""
    source = tmp_path / "mod.py"
    source.write_text(
        "import os\n\ndef f():\n    from squeezenet.models import registry\n\n"
        "_EXPORTS = {'load': 'squeezenet.weights.loader'}\n"
    )
    names = _imported_names(source, "squeezenet.data.mod")
    assert {"squeezenet.models", "squeezenet.models.registry", "squeezenet.weights.loader"} <= names
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_flow_one_way():
    upward = []
    for module, targets in GRAPH.items():
        mine = _layer(module)
        for target in targets:
            theirs = _layer(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_every_package_has_a_layer():
    tops = {m.split(".")[1] for m in MODULES if "." in m}
    known = {name for layer in LAYERS for name in layer} | set(STANDALONE)
    assert tops <= known, f"add {sorted(tops - known)} to LAYERS and docs/architecture.md"


def test_the_runtime_imports_nothing_of_the_package():
    for module, path in MODULES.items():
        if module.split(".")[1:2] == ["runtime"] and path.name != "__init__.py":
            assert _imported_names(path, module) == set(), module


def _imports_of(*argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime ARGV``; -> (process, names of the top-level modules it imported)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    modules = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            modules.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return proc, modules


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["compress", "-w", "x.net", "-o", "y.sqz", "--bits", "abc"],
        ["train", "data", "--epochs", "0"],
        ["export", "-w", "x.net", "-o", "y.onnx", "--opset", "16"],
        ["bench", "--engines", "tensorrt"],
    ],
)
def test_help_and_usage_errors_import_no_torch(argv):
    proc, modules = _imports_of("-m", "squeezenet.cli.main", *argv)
    assert "squeezenet" in modules, proc.stderr[-500:]
    assert not {"torch", "torchvision"} & modules


def test_torch_free_parts_import_without_torch():
    """What the server and the parser use: the codec, the class list, the runtime, errors, the
    image decoder and the server's preprocessing."""
    code = (
        "import sys\n"
        "import squeezenet, squeezenet.errors, squeezenet.atomic, squeezenet.weights.sqz_codec\n"
        "import squeezenet.weights.imagenet as i, squeezenet.runtime.numpy_runtime\n"
        "import squeezenet.data.images, squeezenet.serving.preprocess\n"
        "assert len(i.imagenet_wnids()) == 1000\n"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# a module's size shows its concerns: past these, split it by concern (docs/architecture.md)
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
C_SOURCES = ("*.c", "*.h")


def _long_python_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


_C_DEFINITION = re.compile(r"^[A-Za-z_][^;{}=#]*?\b(\w+)\s*\([^;{}]*\)\s*\{", re.M)


def c_function_lengths(text: str) -> dict[str, int]:
    """{function: lines} of C source: a definition starts at column 0 (its parameters may span
    lines) and runs to the brace that closes its body."""
    lengths = {}
    for match in _C_DEFINITION.finditer(text):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
        lengths[match.group(1)] = text.count("\n", match.start(), end) + 1
    return lengths


def test_no_file_or_function_is_too_long_to_show_its_concern():
    """Under src/, Python and the C templates alike: no file over 500 lines, no function over 80
    (data tables are not code: the class list is a .tsv)."""
    long = []
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix not in (".py", ".c", ".h", ".js"):
            continue
        lines = len(path.read_text().splitlines())
        if lines > MAX_FILE_LINES:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
        if path.suffix == ".py":
            long += _long_python_functions(path)
        elif path.suffix in (".c", ".h"):
            long += [f"{path.relative_to(ROOT)} {name} ({n} lines)"
                     for name, n in c_function_lengths(path.read_text()).items() if n > MAX_FUNCTION_LINES]  # fmt: skip
    assert long == []


def test_the_c_function_measure_sees_a_long_function():
    body = "\n".join(f"    x += {i};" for i in range(90))
    source = (
        f"static int table[] = {{\n1,\n}};\nstatic void sqn_long(int *x)\n{{\n{body}\n}}\n"
        "int f(void) {\n    return 0;\n}\nstatic void g(int a,\n              int b)\n{\n    if (a) { b++; }\n}\n"
    )
    assert c_function_lengths(source) == {"sqn_long": 93, "f": 3, "g": 5}
