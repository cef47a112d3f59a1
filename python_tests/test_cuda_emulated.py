"""The CUDA kernels' source, run on the CPU: csrc/emu translates conv2d_cuda.cu, pool2d_cuda.cu, depthwise2d_cuda.cu and
batch_norm_cuda.cu for an emulation of the CUDA features they use, and check_kernels compares them with the reference
loops (csrc/ops/reference.cpp) on fixed and random shapes, under AddressSanitizer and UBSan. Needs
g++, no GPU."""

import importlib.util
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"
EMU = CSRC / "emu"
CONV, POOL = CSRC / "ops" / "conv2d_cuda.cu", CSRC / "ops" / "pool2d_cuda.cu"
DEPTHWISE = CSRC / "ops" / "depthwise2d_cuda.cu"
BATCH_NORM = CSRC / "ops" / "batch_norm_cuda.cu"
CPU_SOURCES = [
    CSRC / "common.cpp",
    CSRC / "ops" / "conv2d.cpp",
    CSRC / "ops" / "depthwise2d.cpp",
    CSRC / "ops" / "pool2d.cpp",
    CSRC / "ops" / "reference.cpp",
]
FLAGS = ["-std=c++20", "-g", "-pthread", "-fopenmp", "-Wno-unknown-pragmas"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
# One harness per seed, side by side: 296 cases in all.
SEEDS = (1, 2)
BUDGET = ["--conv", "16", "--pool", "50", "--depthwise", "30", "--batch-norm", "16"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _load_translator():
    spec = importlib.util.spec_from_file_location("convkit_emu_translate", EMU / "translate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


translate = _load_translator()


def _gxx():
    gxx = shutil.which("g++")
    if gxx is None:
        if os.environ.get("CI"):
            pytest.fail("g++ must be available in CI")
        pytest.skip("g++ not found: the emulated CUDA check needs it")
    return gxx


def _compile(gxx, out, source, flags):
    """out/<source>.o, with out (which holds the translation's cuda_runtime.h) on the include path."""
    obj = out / (source.name + ".o")
    cmd = [gxx, *flags, f"-I{CSRC}", f"-I{EMU}", f"-I{out}", "-c", str(source), "-o", str(obj)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr[-6000:]}"
    return obj


def _link(gxx, objects, exe):
    cmd = [gxx, *FLAGS, *SANITIZE, *map(str, objects), "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr[-6000:]}"
    return exe


def _output(done):
    return f"exit status {done.returncode}\n{done.stdout[-20000:]}\n{done.stderr[-20000:]}"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """(gxx, folder, objects, harness): the translated kernels, harness and reference loops compiled and linked."""
    gxx = _gxx()
    out = tmp_path_factory.mktemp("cuda_emulated")
    sources = [*translate.translate_files(out, [CONV, POOL, DEPTHWISE, BATCH_NORM]), EMU / "check_kernels.cpp", *CPU_SOURCES]  # slowest first
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        objects = list(pool.map(lambda s: _compile(gxx, out, s, [*FLAGS, *SANITIZE, "-O1"]), sources))
    return gxx, out, objects, _link(gxx, objects, out / "check_kernels")


def test_cuda_kernels_match_the_reference_loops(build):
    exe = build[3]
    runs = [
        subprocess.Popen([exe, "--seed", str(s), *BUDGET], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for s in SEEDS
    ]
    outputs = [p.communicate(timeout=600) for p in runs]
    for proc, (stdout, stderr) in zip(runs, outputs):
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert done.returncode == 0 and "all match" in stdout, _output(done)


def _run_mutant(build, cu, replacements, name, args):
    """check_kernels rebuilt with ``cu`` changed by ``replacements`` (each old text there exactly once), run."""
    gxx, out, objects, _ = build
    source = cu.read_text()
    for old, new in replacements:
        assert source.count(old) == 1, f"update this mutation: {old!r} is no longer in {cu.name} once"
        source = source.replace(old, new)
    mutant = out / name
    mutant.mkdir()
    (mutant / "cuda_runtime.h").write_text(translate.RUNTIME_HEADER)
    cpp = mutant / cu.with_suffix(".cpp").name
    cpp.write_text(translate.translate(source, cu.name))
    obj = _compile(gxx, mutant, cpp, [*FLAGS, "-O0"])  # it only has to give wrong numbers
    exe = _link(gxx, [obj, *(o for o in objects if o.name != obj.name)], mutant / "check_kernels")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=ENV)


def _differs(done):
    return done.returncode == 1 and re.search(r"\d+ OUTPUTS DIFFER", done.stdout)


def test_a_broken_kernel_fails(build):
    """Two TF32 fragment registers of the GEMMs' warp tile swapped: the check must notice."""
    done = _run_mutant(build, CONV, [("af[mi][1] = tf32(ap[8 * RS]);", "af[mi][1] = tf32(ap[4 * KS]);"),
                                     ("af[mi][2] = tf32(ap[4 * KS]);", "af[mi][2] = tf32(ap[8 * RS]);")],
                       "mutant", ["--only", "conv", "--conv", "0", "--case", "0", "--tf32"])
    assert _differs(done), _output(done)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('"r"(a[1]), "r"(a[2])', '"r"(a[2]), "r"(a[1])', "the PTX helper mma_tf32() changed"),
        ("constexpr int kStages", 'void f() { asm("trap;"); }\nconstexpr int kStages', "inline PTX outside"),
        ("if (!fits) {", "if (fits) {} else {", "where the host code picks the 32-bit kernels"),
    ],
)
def test_translation_refuses_what_it_cannot_follow(old, new, message):
    source = CONV.read_text()
    assert source.count(old) == 1
    with pytest.raises(translate.TranslationError, match=re.escape(message)):
        translate.translate(source.replace(old, new), CONV.name)


def test_a_broken_depthwise_kernel_fails(build):
    """Backward-data's gather without its stride test (every tap taken as if it landed on an output): the
    check must notice."""
    done = _run_mutant(build, DEPTHWISE, [("if (th < 0 || th % g.sh != 0 || th / g.sh >= g.OH) continue;",
                                           "if (th < 0 || th / g.sh >= g.OH) continue;")],
                       "depthwise_mutant", ["--only", "depthwise", "--depthwise", "0"])
    assert _differs(done), _output(done)


@pytest.mark.parametrize("old, new, what", [
    # The forward's split sums: every split's partial sum replaced by the first one's.
    ("for (int z = 0; z < splits; ++z) s += part[z * C + c];", "for (int z = 0; z < splits; ++z) s += part[c];",
     "splits"),
    # The whole-pass backward: dx from a gamma-less scale.
    ("const float k = gamma ? gamma[c] * inv : inv,", "const float k = inv,", "scale"),
])
def test_a_broken_batch_norm_kernel_fails(build, old, new, what):
    done = _run_mutant(build, BATCH_NORM, [(old, new)], f"batch_norm_mutant_{what}",
                       ["--only", "batch_norm", "--batch-norm", "0"])
    assert _differs(done), _output(done)


def test_a_broken_argmax_window_check_fails(build):
    """The GPU's argmax window check with its row test off by one: the counts must differ from the loops'."""
    old = "outside += cell < 0 || ih < o.h0 || ih >= o.h1 || iw < o.w0 || iw >= o.w1;"
    done = _run_mutant(build, POOL, [(old, old.replace("ih >= o.h1", "ih > o.h1"))], "pool_mutant",
                       ["--only", "pool", "--pool", "20"])
    assert done.returncode == 1 and "argmax window check" in done.stdout, _output(done)


def test_every_cuda_kernel_is_emulated_and_checked():
    """Every CUDA source is translated here, and every CUDA entry point its header declares is run by
    check_kernels: a new kernel cannot go unchecked."""
    assert set((CSRC / "ops").glob("*_cuda.cu")) == {CONV, POOL, DEPTHWISE, BATCH_NORM}
    declared = {name for h in (CSRC / "ops").glob("*.h")
                for name in re.findall(r"^\w+ (\w+_cuda)\(", h.read_text(), re.M)}
    checked = set(re.findall(r"\b(\w+_cuda)\(", (EMU / "check_kernels.cpp").read_text()))
    assert declared and not declared - checked, f"CUDA entry points check_kernels never runs: {declared - checked}"
