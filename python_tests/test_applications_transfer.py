"""Transfer learning as the notes do it: a frozen MobileNet base (its batch normalizations in inference mode,
as in Keras) under a new head trains on an image folder without changing the base; unfrozen and recompiled
with a low learning rate, fine-tuning then changes it."""

import numpy as np
import pytest

from keras_apps import build_pair, keras

import convkit
from convkit import applications as A
from convkit import layers as L

Image = pytest.importorskip("PIL.Image")


def _image_folder(root, per_class=8, side=64):
    """Two classes of PNGs: reddish and bluish noise."""
    rng = np.random.default_rng(0)
    for label, channel in (("red", 0), ("blue", 2)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 120, (side, side, 3), dtype=np.uint8)
            img[..., channel] += 120
            Image.fromarray(img).save(root / label / f"{i}.png")
    return root


def _snapshot(model):
    return [w.copy() for w in model.get_weights()]


def _changed(before, after):
    return [not np.array_equal(a, b) for a, b in zip(before, after)]


def test_frozen_mobilenet_base_then_fine_tuning(tmp_path):
    folder = _image_folder(tmp_path / "images")
    train = convkit.utils.image_dataset_from_directory(folder, image_size=(64, 64), batch_size=8, seed=0,
                                                       verbose=False)
    _, base = build_pair(keras.applications.MobileNet, A.MobileNet, include_top=False, input_shape=(64, 64, 3),
                         alpha=0.5)  # Keras's random weights and statistics copied in
    base.trainable = False
    inputs = L.Input((64, 64, 3))
    x = L.Rescaling(1 / 127.5, offset=-1)(inputs)  # mobilenet.preprocess_input as a layer
    x = base(x, training=False)
    x = L.GlobalAveragePooling2D()(x)
    model = convkit.Model(inputs, L.Dense(2, activation="softmax")(x))
    assert len(model.trainable_weights) == 2 and all(not l.trainable for l in base.layers)

    model.compile(optimizer=convkit.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    base_before, head_before = _snapshot(base), _snapshot(model.layers[-1])
    history = model.fit(train, epochs=3, verbose=0)
    assert not any(_changed(base_before, _snapshot(base)))  # kernels and BatchNormalization statistics alike
    assert all(_changed(head_before, _snapshot(model.layers[-1])))
    assert history.history["loss"][-1] < history.history["loss"][0]

    base.trainable = True
    assert len(model.trainable_weights) == len(base.trainable_weights) + 2
    model.compile(optimizer=convkit.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    tuned_before = _snapshot(base)
    model.fit(train, epochs=1, verbose=0)
    changed = _changed(tuned_before, _snapshot(base))
    kinds = [v.name.rsplit("/", 1)[-1] for v in base.weights]
    assert all(c for c, kind in zip(changed, kinds) if kind in ("kernel", "depthwise_kernel", "gamma", "beta"))
    assert all(c for c, kind in zip(changed, kinds) if kind in ("moving_mean", "moving_variance"))
