"""Load a compiled module from the installed copy of convkit when Python imports the sources.

After a plain ``pip install .``, running ``python -m convkit.train`` from the checkout imports the
package from the source folder, which holds no compiled modules. The installed distribution has
them, built from these same sources; load them from there under their own names.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from importlib import metadata


def _installed_path(name: str):
    try:
        dist = metadata.distribution("convkit")
    except metadata.PackageNotFoundError:
        return None
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for f in dist.files or ():
        if len(f.parts) == 2 and f.parts[0] == "convkit" and f.name.startswith(name + ".") and f.name.endswith(suffixes):
            return dist.locate_file(f)
    return None


def from_installed_copy(name: str):
    """``convkit.<name>`` loaded from the installed distribution; ImportError saying what to do when there is none."""
    path = _installed_path(name)
    if path is None:
        raise ImportError(f"convkit.{name} is neither beside the sources nor in an installed copy of convkit "
                          "(install with 'pip install .' or 'pip install -e .')")
    spec = importlib.util.spec_from_file_location(f"convkit.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    setattr(sys.modules["convkit"], name, module)
    return module
