"""Fashion-MNIST: 60,000 training and 10,000 test images of clothing, 28x28 grayscale, 10 classes."""

from __future__ import annotations

from pathlib import Path

from convkit.datasets._idx_dataset import IdxDataset

# SHA-256 of the official uncompressed IDX files (github.com/zalandoresearch/fashion-mnist).
RAW_SHA256 = {
    "x_train": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "y_train": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "x_test": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "y_test": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
# Where Debian's dataset-fashion-mnist package installs the official files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

_SPEC = IdxDataset(
    title="Fashion-MNIST",
    cache_name="fashion_mnist",
    npz_name="fashion_mnist.npz",
    raw_sha256=RAW_SHA256,
    how_to_supply=(
        "Supply the data with load_data(path=...) or $CONVKIT_DATA pointing at a folder holding the four "
        "official IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]), or on Debian/Ubuntu run "
        "`apt-get install dataset-fashion-mnist`."),
)
# The official download first, then what a package registry installed.
_SPEC.sources = [
    (f"download {KERAS_BASE_URL}", lambda verify: _SPEC.download_idx(KERAS_BASE_URL, verify)),
    (f"Debian package dataset-fashion-mnist at {DEBIAN_DIR}",
     lambda verify: _SPEC.read_folder(DEBIAN_DIR, verify) if DEBIAN_DIR.is_dir() else None),
]


def load_data(path=None, *, verify: bool = True):
    """Load Fashion-MNIST as ``((x_train, y_train), (x_test, y_test))``.

    ``x`` is uint8 of shape (N, 28, 28) and ``y`` uint8 of shape (N,) with N = 60000 / 10000.
    ``path`` may be a folder of the four IDX files (raw or .gz) or a ``.npz`` with the four arrays;
    when given, nothing else is tried. Without it the lookup is ``$CONVKIT_DATA``, the cache,
    the download Keras uses, then Debian's ``dataset-fashion-mnist`` install folder. Data is checked
    against the SHA-256 of the official files unless ``verify=False`` (unverified data is never cached).
    """
    return _SPEC.load(path, verify)
