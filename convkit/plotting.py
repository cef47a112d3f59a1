"""Training curves, drawn with matplotlib."""

from __future__ import annotations


def plot_history(history, path=None, title=None):
    """Loss and accuracy per epoch (train vs validation) as a matplotlib Figure, saved to ``path``
    (PNG) when given. ``history`` is a History or its ``.history`` dict."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is
    from matplotlib.ticker import MaxNLocator

    h = getattr(history, "history", history)
    metrics = [k for k in h if not k.startswith("val_") and k != "learning_rate"]
    fig = Figure(figsize=(5 * len(metrics), 4))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, k in zip(axes[0], metrics):
        epochs = range(1, len(h[k]) + 1)
        ax.plot(epochs, h[k], "o-", label=f"train {k}")
        if f"val_{k}" in h:
            ax.plot(range(1, len(h[f"val_{k}"]) + 1), h[f"val_{k}"], "s-", label=f"validation {k}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5 on short runs
        ax.set_ylabel(k)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
