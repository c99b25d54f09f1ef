"""Running the conversion child (``python -m squeezenet.serving.convert``) for the server: with the
CPU it needs while requests are being served, cancellable, and bounded in time.

At a lower priority (nice 5), the child crawled while the server was busy: a swap of the 0.47 MB
``.sqz`` took 52-55 s under 8 clients against 8 s on an idle server (issue #38). ``nice`` only
weighs the child against the server's many busy threads (decoding, ONNX Runtime, the event loop),
so instead, while the child runs, the server's own threads keep to all cores but the last
``--convert-cores`` ones (``sched_setaffinity`` on each of its threads, undone afterwards): the
child keeps every core, and has those to itself. Requests are served meanwhile on the others,
more slowly for those seconds. With ``--convert-cores 0`` (or a single core) the child shares
the cores at nice 5, as before.

A conversion is a coroutine: cancelled (the uploader went away, the server stops), it kills the
child, so that an abandoned swap costs nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from pathlib import Path

from squeezenet.errors import WeightsError
from squeezenet.serving.config import ServeConfig

SHARED_NICENESS = 5  # with no core kept for it, the child yields to the requests being served


def _command(weights: Path, folder: Path, config: ServeConfig, name: str | None) -> list[str]:
    command = [sys.executable, "-m", "squeezenet.serving.convert", str(weights), str(folder)]
    command += ["--browser", config.browser_format, "--threads", str(config.threads)]
    command += ["--calibration-limit", str(config.calibration_limit)]
    if name:
        command += ["--name", name]
    if config.calibration:
        command += ["--calibration", *map(str, config.calibration)]
    return command


def _child_error(returncode: int, stderr: str, weights: Path) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    reasons = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    if reasons:
        return reasons[-1]
    return f"{weights}: the conversion process failed (exit status {returncode}: {lines[-1] if lines else ''})"


def _all_threads(cpus: set[int]) -> None:
    """Every thread of this process onto ``cpus`` (threads started meanwhile included)."""
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that has just ended
            os.sched_setaffinity(int(task), cpus)


@contextlib.contextmanager
def cores_kept(count: int):
    """While inside, this process's threads keep off its last ``count`` usable cores; -> the cores
    the child may use (all of them), or None where nothing is kept (``count`` 0, one core, no
    affinity calls): the child then runs at ``SHARED_NICENESS``."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
    if count <= 0 or len(usable) <= count or not Path("/proc/self/task").is_dir():
        yield None
        return
    _all_threads(set(usable[:-count]))
    try:
        yield set(usable)
    finally:
        _all_threads(set(usable))


async def run_conversion(weights: Path, folder: Path, config: ServeConfig, name: str | None = None) -> None:
    """Convert ``weights`` into ``folder`` in the child; ``WeightsError`` with the child's reason.
    Cancelled, the child is killed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(config.threads)}
    with cores_kept(config.convert_cores) as child_cores:
        command = _command(weights, folder, config, name)
        if child_cores is None and shutil.which("nice"):
            command = ["nice", "-n", str(SHARED_NICENESS), *command]
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env
        )
        if child_cores is not None:  # it started with the event loop thread's cores: give it them all
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, child_cores)
        try:
            async with asyncio.timeout(config.convert_timeout):
                _, stderr = await proc.communicate()
        except TimeoutError:
            raise WeightsError(
                f"{weights}: converting took longer than {config.convert_timeout:g} s (--convert-timeout)"
            ) from None
        finally:
            if proc.returncode is None:  # timed out or cancelled
                proc.kill()
                await asyncio.shield(proc.wait())
    if proc.returncode != 0:
        raise WeightsError(_child_error(proc.returncode, stderr.decode(errors="replace"), weights))
