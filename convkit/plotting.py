"""Training curves (matplotlib is optional: pip install matplotlib)."""

from __future__ import annotations

import sys


def plot_history(history, path, title=None) -> bool:
    """Save loss and accuracy per epoch (train vs validation) to ``path`` (PNG).

    ``history`` is a History or its ``.history`` dict. Returns False, after saying so on stderr,
    when matplotlib is not installed.
    """
    h = getattr(history, "history", history)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed, so no curves were drawn (pip install matplotlib)", file=sys.stderr)
        return False
    metrics = [k for k in h if not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, k in zip(axes[0], metrics):
        epochs = range(1, len(h[k]) + 1)
        ax.plot(epochs, h[k], "o-", label=f"train {k}")
        if f"val_{k}" in h:
            ax.plot(range(1, len(h[f"val_{k}"]) + 1), h[f"val_{k}"], "s-", label=f"validation {k}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(k)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
