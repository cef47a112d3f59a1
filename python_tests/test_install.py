"""The package as a plain `pip install .` leaves it: sources in the checkout, compiled modules only in
the installed copy. Python imports the sources first when run from the checkout."""

import os
import shutil
import subprocess
import sys

import numpy as np
import tqdm

import convkit

PKG = os.path.dirname(convkit.__file__)


def _sources_without_compiled_modules(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(PKG, src / "convkit", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return src


def _installed_copy(tmp_path):
    """A site folder as pip leaves it: the compiled module and a dist-info whose RECORD lists it."""
    site = tmp_path / "site"
    (site / "convkit").mkdir(parents=True)
    so = os.path.basename(convkit._cpu.__file__)
    shutil.copy(convkit._cpu.__file__, site / "convkit" / so)
    info = site / f"convkit-{convkit.__version__}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: convkit\nVersion: {convkit.__version__}\n")
    (info / "RECORD").write_text(f"convkit/{so},,\n")
    return site


def _deps(tmp_path):
    """NumPy and tqdm alone, linked into a folder of their own: their site folder may also hold this
    checkout's installed copy of convkit, which the tests must not see unless they ask for it."""
    deps = tmp_path / "deps"
    deps.mkdir()
    for m in (np, tqdm):
        pkg = os.path.dirname(m.__file__)
        for name in os.listdir(os.path.dirname(pkg)):  # the package and its vendored libraries (numpy.libs)
            if name == os.path.basename(pkg) or name.startswith(os.path.basename(pkg) + ".libs"):
                os.symlink(os.path.join(os.path.dirname(pkg), name), deps / name)
    return deps


def _run(tmp_path, paths, code):
    # -S: none of this interpreter's site folders (where an editable install would redirect the import)
    prelude = f"import sys; sys.path[:0] = {[str(p) for p in paths]!r}; sys.path.append({str(_deps(tmp_path))!r}); "
    return subprocess.run([sys.executable, "-S", "-c", prelude + code], capture_output=True, text=True, timeout=120)


def test_sources_run_with_the_installed_copys_compiled_modules(tmp_path):
    src, site = _sources_without_compiled_modules(tmp_path), _installed_copy(tmp_path)
    res = _run(tmp_path, [src, site], "import numpy as np, convkit; from convkit import ops; "
                            "print(convkit.__file__); print(convkit._cpu.__file__); "
                            "print(ops.max_pool2d(np.ones((1, 4, 4, 1), np.float32), 2).shape)")
    assert res.returncode == 0, res.stderr
    init, compiled, shape = res.stdout.splitlines()
    assert init.startswith(str(src)) and compiled.startswith(str(site)) and shape == "(1, 2, 2, 1)"


def test_sources_without_any_install_say_what_to_do(tmp_path):
    res = _run(tmp_path, [_sources_without_compiled_modules(tmp_path)], "import convkit")
    assert res.returncode == 1
    assert "convkit._cpu is neither beside the sources nor in an installed copy of convkit" in res.stderr
    assert "pip install ." in res.stderr
