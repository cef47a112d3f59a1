"""Training holds steady host memory: no growth per epoch once allocator pools have warmed up.

Each measurement runs in a fresh interpreter: in a process that has already freed large arrays
(this test session), the allocator serves new ones from pages it still holds, and a real leak
would not show in the resident size.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import memory_training

CHILD = textwrap.dedent('''
    import json, sys
    import numpy as np
    sys.path.insert(0, {bench!r})
    import memory_training
    from convkit import callbacks as cb

    class Leak(cb.Callback):
        """Keeps 4 MiB per epoch alive, as a leak in the training loop would."""
        def __init__(self):
            super().__init__()
            self.kept = []
        def on_epoch_end(self, epoch, logs=None):
            self.kept.append(np.ones(2**20, np.float32))

    r = memory_training.measure(epochs=10, n=512, callbacks=[Leak()] if {leak!r} else [])
    print(json.dumps(r["host_rss_mib"]))
''')


def _rss_per_epoch(leak: bool) -> list:
    code = CHILD.format(bench=str(Path(memory_training.__file__).parent), leak=leak)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_host_memory_does_not_grow_per_epoch():
    rss = _rss_per_epoch(leak=False)
    assert len(rss) == 10
    assert memory_training.growth(rss) < 2.0, rss


def test_the_measurement_sees_a_leak():
    rss = _rss_per_epoch(leak=True)
    assert memory_training.growth(rss) > 20.0, rss
