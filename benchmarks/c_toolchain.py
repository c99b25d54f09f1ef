"""Build and run the generated C: host compilers (gcc, clang, -m32) and a Cortex-M3 under QEMU.

Used by tests/test_export_c.py and bench_export_c.py; a user needs none of it (the export is plain
sources), so it lives beside the benchmarks, not in the package.
The Cortex-M target is QEMU's ``mps2-an385`` board (Cortex-M3, 4 MB of code memory at 0,
4 MB of RAM at 0x20000000) with semihosting: the program's printf reaches stdout, its exit
status becomes QEMU's. With ``-icount shift=0`` QEMU advances its virtual clock one
nanosecond per instruction, so semihosting's SYS_ELAPSED counts executed instructions
(QEMU models no cycles; the count is an instruction count, not a time on a real part). The
harness reads the board's CMSDK APB timer 0 (25 MHz of virtual time: one tick per 40
instructions; 32 bits, so no interrupt is needed). Semihosting's own SYS_ELAPSED follows the
host's clock, not the instruction count.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squeezenet.errors import DeployError

STRICT = ("-std=c99", "-Wall", "-Wextra", "-Werror")
LIBRARY = ("squeezenet_model.c", "squeezenet_weights.c")
ARM_CPU = "cortex-m3"
ARM_MACHINE = "mps2-an385"
INSTRUCTIONS_PER_TICK = 40  # -icount shift=0: 1 ns of virtual time per instruction; the timer ticks at 25 MHz
ARM_FLAGS = (f"-mcpu={ARM_CPU}", "-mthumb", "-O2", "--specs=rdimon.specs", "-nostartfiles")

STARTUP = r"""/* minimal Cortex-M start-up for QEMU's MPS2 boards: vector table, .data copy, .bss clear */
#include <stdint.h>
#include <stdlib.h>
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
extern void initialise_monitor_handles(void);
void Reset_Handler(void);
void _init(void);
void _fini(void);
void _init(void) {}
void _fini(void) {}
static void Fault_Handler(void) { exit(99); }
__attribute__((section(".isr_vector"), used)) void (*const sqn_vectors[16])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler};
void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    initialise_monitor_handles();
    exit(main());
}
"""

LINKER_SCRIPT = """MEMORY { FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 4M
         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 4M }
ENTRY(Reset_Handler)
SECTIONS {
  .text : { KEEP(*(.isr_vector)) *(.text*) *(.rodata*) KEEP(*(.init)) KEEP(*(.fini)) . = ALIGN(4); } > FLASH
  .ARM.exidx : { *(.ARM.exidx*) } > FLASH
  .init_array : { __init_array_start = .; KEEP(*(.init_array*)) __init_array_end = .; } > FLASH
  .preinit_array : { __preinit_array_start = .; KEEP(*(.preinit_array*)) __preinit_array_end = .; } > FLASH
  .fini_array : { __fini_array_start = .; KEEP(*(.fini_array*)) __fini_array_end = .; } > FLASH
  _sidata = LOADADDR(.data);
  .data : { . = ALIGN(4); _sdata = .; *(.data*) . = ALIGN(4); _edata = .; } > RAM AT > FLASH
  .bss : { . = ALIGN(4); _sbss = .; __bss_start__ = .; *(.bss*) *(COMMON)
           . = ALIGN(4); _ebss = .; __bss_end__ = .; } > RAM
  . = ALIGN(8); end = .; _end = .;
  _estack = ORIGIN(RAM) + LENGTH(RAM);
}
"""


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DeployError(f"{name} is not installed (Debian: see .ci/run's SYSTEM_PACKAGES)")
    return path


def _run(cmd: list[str], timeout: float = 600, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if proc.returncode != 0:
        raise DeployError(f"{Path(cmd[0]).name} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    return proc.stdout


def harness_source(images: np.ndarray, repeat: int = 0) -> str:
    """A main() that runs every embedded image and prints ``top1 score0 score1 ...`` per line.

    ``repeat`` > 0: also time ``repeat`` runs of each image (POSIX clock, host only) and print
    ``ms <median>``. Under semihosting (SQN_SEMIHOSTING) each line ends with the instruction count.
    """
    images = np.asarray(images, dtype=np.uint8)
    n = len(images)
    rows = ",\n".join("{" + ",".join(map(str, img.ravel().tolist())) + "}" for img in images)
    timing = "#define _POSIX_C_SOURCE 199309L\n#include <time.h>\n" if repeat else ""
    return f"""{timing}#include <stdio.h>
#include <stdlib.h>
#include "squeezenet_model.h"

static const uint8_t images[{n}][SQUEEZENET_INPUT_SIZE * SQUEEZENET_INPUT_SIZE * SQUEEZENET_INPUT_CHANNELS] = {{
{rows}
}};
static int32_t scores[SQUEEZENET_NUM_CLASSES];

#ifdef SQN_SEMIHOSTING
/* MPS2 CMSDK APB timer 0: a 32-bit down counter at 25 MHz of QEMU's virtual time */
#define SQN_TIMER ((volatile uint32_t *)0x40000000u)
static uint64_t elapsed(void)
{{
    if (!(SQN_TIMER[0] & 1u)) {{
        SQN_TIMER[2] = 0xFFFFFFFFu; /* reload */
        SQN_TIMER[1] = 0xFFFFFFFFu; /* value */
        SQN_TIMER[0] = 1u;          /* enable */
    }}
    return (uint64_t)(0xFFFFFFFFu - SQN_TIMER[1]) * {INSTRUCTIONS_PER_TICK}u;
}}
#endif
{_timing_helpers() if repeat else ""}
int main(void)
{{
    int i, j;
    for (i = 0; i < {n}; i++) {{
#ifdef SQN_SEMIHOSTING
        uint64_t t0 = elapsed(), t1;
#endif
        int top = squeezenet_run(images[i], scores);
#ifdef SQN_SEMIHOSTING
        t1 = elapsed();
#endif
        printf("%d", top);
        for (j = 0; j < SQUEEZENET_NUM_CLASSES; j++) printf(" %ld", (long)scores[j]);
#ifdef SQN_SEMIHOSTING
        printf(" instructions %lu", (unsigned long)(t1 - t0));
#endif
        printf("\\n");
    }}
{_timing_loop(n, repeat) if repeat else ""}    return 0;
}}
"""


def file_harness_source() -> str:
    """A host main() reading raw images (each H*W*C bytes) from argv[1]: for image sets too large to embed."""
    return r"""#include <stdio.h>
#include "squeezenet_model.h"

static uint8_t image[SQUEEZENET_INPUT_SIZE * SQUEEZENET_INPUT_SIZE * SQUEEZENET_INPUT_CHANNELS];
static int32_t scores[SQUEEZENET_NUM_CLASSES];

int main(int argc, char **argv)
{
    FILE *f = argc == 2 ? fopen(argv[1], "rb") : 0;
    int j;
    if (!f) return 2;
    while (fread(image, 1, sizeof image, f) == sizeof image) {
        printf("%d", squeezenet_run(image, scores));
        for (j = 0; j < SQUEEZENET_NUM_CLASSES; j++) printf(" %ld", (long)scores[j]);
        printf("\n");
    }
    fclose(f);
    return 0;
}
"""


def _timing_helpers() -> str:
    return """
static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
"""


def _timing_loop(n: int, repeat: int) -> str:
    return f"""    {{
        static double ms[{n * repeat}];
        int k;
        for (k = 0; k < {n * repeat}; k++) {{
            double t0 = now_ms();
            squeezenet_run(images[k % {n}], scores);
            ms[k] = now_ms() - t0;
        }}
        qsort(ms, {n * repeat}, sizeof ms[0], by_value);
        printf("ms %.4f\\n", ms[{n * repeat} / 2]);
    }}
"""


@dataclass
class RunResult:
    top1: np.ndarray
    scores: np.ndarray
    instructions: np.ndarray | None = None
    median_ms: float | None = None


def parse_output(text: str) -> RunResult:
    tops, scores, counts, ms = [], [], [], None
    for line in text.splitlines():
        if line.startswith("ms "):
            ms = float(line.split()[1])
            continue
        fields = line.split()
        if "instructions" in fields:
            counts.append(int(fields[-1]))
            fields = fields[:-2]
        tops.append(int(fields[0]))
        scores.append([int(v) for v in fields[1:]])
    return RunResult(np.array(tops), np.array(scores, dtype=np.int64), np.array(counts) if counts else None, ms)


def compile_host(
    folder: Path,
    harness: str,
    out: Path,
    compiler: str = "gcc",
    flags: tuple[str, ...] = ("-O2",),
) -> Path:
    """The library plus ``harness`` (C source text), strict C99, warnings as errors."""
    folder = Path(folder)
    (folder / "sqn_harness.c").write_text(harness)
    sources = [str(folder / name) for name in (*LIBRARY, "sqn_harness.c")]
    _run([tool(compiler), *STRICT, *flags, *sources, "-o", str(out)])
    return Path(out)


def run_program(cmd: list[str], timeout: float = 600) -> RunResult:
    return parse_output(_run(cmd, timeout=timeout))


def build_arm(folder: Path, harness: str, out: Path, extra: tuple[str, ...] = ()) -> Path:
    """An ELF for QEMU's mps2-an385 (Cortex-M3), strict C99 for the library."""
    folder = Path(folder)
    cc = tool("arm-none-eabi-gcc")
    (folder / "sqn_harness.c").write_text(harness)
    (folder / "sqn_startup.c").write_text(STARTUP)
    (folder / "sqn_mps2.ld").write_text(LINKER_SCRIPT)
    objects = []
    for name in LIBRARY:
        obj = Path(out).with_name(Path(name).stem + ".arm.o")
        _run([cc, *STRICT, *ARM_FLAGS, *extra, "-c", str(folder / name), "-o", str(obj)])
        objects.append(str(obj))
    _run(
        [cc, *ARM_FLAGS, *extra, "-DSQN_SEMIHOSTING", "-T", str(folder / "sqn_mps2.ld"), str(folder / "sqn_startup.c"),
         str(folder / "sqn_harness.c"), *objects, "-o", str(out)]
    )  # fmt: skip
    return Path(out)


def run_qemu(elf: Path, timeout: float = 600) -> RunResult:
    cmd = [tool("qemu-system-arm"), "-machine", ARM_MACHINE, "-nographic", "-semihosting", "-icount", "shift=0"]
    return run_program([*cmd, "-kernel", str(elf)], timeout=timeout)


def section_sizes(obj: Path, size_tool: str = "size") -> dict[str, int]:
    """{section: bytes} of an object file (``size -A``)."""
    sizes = {}
    for line in _run([tool(size_tool), "-A", str(obj)]).splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = sizes.get(parts[0], 0) + int(parts[1])
    return sizes


def data_bytes(sizes: dict[str, int]) -> int:
    """Flash bytes of data: read-only data plus initialised data (``.bss`` is RAM only)."""
    return sum(v for k, v in sizes.items() if k.startswith((".rodata", ".data")))


def takes_vnni_path(compiler: str = "gcc", flags: tuple[str, ...] = ("-O2",)) -> bool:
    """Whether an int8 build compiled with ``flags`` takes the runtime's AVX-512 VNNI path: the
    compiler targets AVX-512 F, BW and VNNI (the macros the runtime tests) and nothing turns it off."""
    if any(f.startswith("-DSQN_VNNI=") and f != "-DSQN_VNNI=1" for f in flags):
        return False
    macros = _run([tool(compiler), *flags, "-dM", "-E", "-x", "c", "/dev/null"])
    return all(f"#define {m} 1" in macros for m in ("__AVX512F__", "__AVX512BW__", "__AVX512VNNI__"))


def static_ram_bytes(sizes: dict[str, int]) -> int:
    """RAM an object takes before any call: its initialised data (copied from flash at start-up) and its
    zeroed data (for squeezenet_model.c: the arena, the layer descriptors the weight table is bound
    into, the binder's state)."""
    return sizes.get(".data", 0) + sizes.get(".bss", 0)


def compile_object(source: Path, out: Path, compiler: str = "gcc", flags: tuple[str, ...] = ("-O2",)) -> Path:
    _run([tool(compiler), *STRICT, *flags, "-c", str(source), "-o", str(out)])
    return Path(out)


def stack_usage(folder: Path, compiler: str = "gcc", flags: tuple[str, ...] = ("-O2",)) -> dict:
    """Worst stack depth of ``squeezenet_run``: gcc's per-function frames (-fcallgraph-info=su)
    summed along the deepest call chain. Every frame is static (no VLA, no alloca)."""
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "squeezenet_model.o"
        _run([tool(compiler), *STRICT, *flags, "-fcallgraph-info=su", "-c", str(Path(folder) / LIBRARY[0]),
              "-o", str(obj)], cwd=Path(tmp))  # fmt: skip
        text = next(Path(tmp).glob("*.ci")).read_text()
    frames, calls = {}, {}
    for title, label in re.findall(r'node: \{ title: "([^"]+)" label: "([^"]*)"', text):
        found = re.search(r"(\d+) bytes \((static|dynamic)", label)
        frames[title] = int(found.group(1)) if found else 0
    for src, dst in re.findall(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', text):
        calls.setdefault(src, set()).add(dst)

    def depth(fn: str, seen: frozenset) -> int:
        below = [depth(c, seen | {fn}) for c in calls.get(fn, ()) if c not in seen]
        return frames.get(fn, 0) + max(below, default=0)

    root = next(t for t in frames if t.split(":")[-1] == "squeezenet_run")
    return {"worst_chain_bytes": depth(root, frozenset()), "largest_frame_bytes": max(frames.values())}
