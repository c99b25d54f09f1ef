"""The page's updates: byte deltas of its WebAssembly module (``serving/bytedelta.py``), made here
and applied both by Python and by the page's ``static/bytedelta.js`` (in Node.js, the same code the
browser runs): the same new file, or one line saying why not."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from conftest import ROOT
from squeezenet.serving.bytedelta import ByteDeltaError, apply_byte_delta, make_byte_delta

SCRIPT = """
import { readFile } from "node:fs/promises";
const { applyByteDelta } = await import(process.argv[2]);
const [old, delta] = await Promise.all([readFile(process.argv[3]), readFile(process.argv[4])]);
try {
  const out = await applyByteDelta(new Uint8Array(old), new Uint8Array(delta));
  process.stdout.write(JSON.stringify({ bytes: Buffer.from(out).toString("base64") }));
} catch (error) {
  process.stdout.write(JSON.stringify({ error: error.message }));
}
"""


def _files() -> tuple[bytes, bytes]:
    """An 'old module' and a 'new' one: some blocks moved, some rewritten, some new bytes."""
    rng = np.random.default_rng(0)
    old = rng.integers(0, 256, 60_000, dtype=np.uint8).tobytes()
    new = old[:10_000] + rng.integers(0, 256, 300, dtype=np.uint8).tobytes() + old[10_000:30_000]
    new += bytes(b ^ 1 for b in old[30_000:30_050]) + old[30_050:] + old[:5_000]
    return old, new


def test_a_byte_delta_is_small_and_rebuilds_the_new_file():
    old, new = _files()
    delta = make_byte_delta(old, new)
    assert apply_byte_delta(old, delta) == new
    assert len(delta) < 600  # the 350 new bytes, the copies and the header
    with pytest.raises(ByteDeltaError, match="applies to the file with SHA-256"):
        apply_byte_delta(new, delta)


def _in_node(tmp_path, old: bytes, delta: bytes) -> dict:
    if shutil.which("node") is None:
        pytest.fail("Node.js is not installed (.ci/run installs it: apt-get install nodejs)")
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "delta").write_bytes(delta)
    script = tmp_path / "apply.mjs"
    script.write_text(SCRIPT)
    module = (ROOT / "src/squeezenet/serving/static/bytedelta.js").as_uri()
    done = subprocess.run(["node", str(script), module, str(tmp_path / "old"), str(tmp_path / "delta")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_pages_patcher_gives_the_same_file(tmp_path):
    import base64

    old, new = _files()
    got = _in_node(tmp_path, old, make_byte_delta(old, new))
    assert base64.b64decode(got["bytes"]) == new


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda d: d[:40], "not a byte delta"),
        (lambda d: b"XXXX" + d[4:], "not a byte delta"),
        (lambda d: d[:-20], "damaged"),  # the deflate stream cut short
        (lambda d: d[:46] + bytes(32) + d[78:], "not the one the delta names"),
    ],
)
def test_a_damaged_delta_is_refused_in_python_and_by_the_page(tmp_path, damage, words):
    old, new = _files()
    bad = damage(make_byte_delta(old, new))
    with pytest.raises(ByteDeltaError, match=words):
        apply_byte_delta(old, bad)
    got = _in_node(tmp_path, old, bad)
    assert "error" in got, got


def test_the_page_refuses_a_delta_for_another_module(tmp_path):
    old, new = _files()
    assert "another module" in _in_node(tmp_path, new, make_byte_delta(old, new))["error"]
