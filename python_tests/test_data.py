"""convkit.data.Dataset: tf.data pipelines as the course notes write them, and fit/evaluate/predict on them."""

import threading

import numpy as np
import pytest

import convkit
from convkit import layers
from convkit.data import AUTOTUNE, INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset


def xy(n=100, rng=None):
    rng = rng or np.random.default_rng(0)
    x = rng.random((n, 6, 6, 1), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)
    return x, y


def small_model(seed=3):
    convkit.utils.set_random_seed(seed)
    m = convkit.Sequential([layers.Input((6, 6, 1)), layers.Conv2D(2, 3, activation="relu"), layers.Flatten(),
                            layers.Dense(2, activation="softmax")])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def test_from_tensor_slices_yields_numpy_elements():
    x, y = np.arange(12.0).reshape(6, 2), np.arange(6)
    ds = Dataset.from_tensor_slices((x, y))
    elements = list(ds)
    assert len(ds) == ds.cardinality() == 6
    assert all(isinstance(a, np.ndarray) and isinstance(b, np.ndarray) for a, b in elements)
    np.testing.assert_array_equal(elements[4][0], x[4])
    assert elements[4][1] == 4 and elements[4][1].shape == ()
    d = list(Dataset.from_tensor_slices({"image": x, "label": y}))[2]
    assert set(d) == {"image", "label"} and d["label"] == 2
    assert list(Dataset.from_tensor_slices([1, 2, 3])) == [1, 2, 3]  # a list is one array, as in tf.data
    with pytest.raises(ValueError, match="first dimensions"):
        Dataset.from_tensor_slices((x, y[:5]))


def test_batch_drop_remainder_and_cardinality():
    ds = Dataset.from_tensor_slices((np.arange(10), np.arange(10) * 2))
    batches = list(ds.batch(4))
    assert [len(b[0]) for b in batches] == [4, 4, 2] and len(ds.batch(4)) == 3
    np.testing.assert_array_equal(batches[1][1], [8, 10, 12, 14])
    assert [len(b[0]) for b in ds.batch(4, drop_remainder=True)] == [4, 4]
    assert len(ds.batch(4, drop_remainder=True)) == 2
    unbatched = ds.batch(3).unbatch()
    assert unbatched.cardinality() == UNKNOWN_CARDINALITY
    assert [int(a) for a, _ in unbatched] == list(range(10))
    with pytest.raises(TypeError, match="unknown"):
        len(unbatched)


def test_take_skip_repeat():
    ds = Dataset.range(5)
    assert [int(v) for v in ds.take(3)] == [0, 1, 2] and len(ds.take(3)) == 3
    assert [int(v) for v in ds.skip(3)] == [3, 4] and len(ds.skip(3)) == 2
    assert [int(v) for v in ds.repeat(2)] == [0, 1, 2, 3, 4] * 2 and len(ds.repeat(2)) == 10
    forever = ds.repeat()
    assert forever.cardinality() == INFINITE_CARDINALITY
    with pytest.raises(TypeError, match="infinite"):
        len(forever)
    assert [int(v) for v in forever.take(12)] == [0, 1, 2, 3, 4] * 2 + [0, 1]
    assert convkit.data.experimental.cardinality(forever) == convkit.data.experimental.INFINITE_CARDINALITY
    assert convkit.data.experimental.AUTOTUNE == AUTOTUNE
    assert list(Dataset.range(0).repeat()) == []


def test_map_takes_tuple_elements_as_arguments_and_is_lazy():
    calls = []

    def scale(image, label):
        calls.append(int(label))
        return image / 255.0, label

    x = np.full((8, 2, 2, 1), 255.0, np.float32)
    ds = Dataset.from_tensor_slices((x, np.arange(8))).map(scale, num_parallel_calls=AUTOTUNE)
    assert calls == []  # nothing runs until iterated
    first = list(ds.take(3))
    assert calls == [0, 1, 2]
    np.testing.assert_allclose(first[0][0], 1.0)
    assert [tuple(b.shape) for b, _ in ds.batch(5)] == [(5, 2, 2, 1), (3, 2, 2, 1)]


def test_shuffle_follows_the_buffer_semantics_of_tf_data():
    n = 50
    ds = Dataset.range(n)
    assert [int(v) for v in ds.shuffle(1, seed=0)] == list(range(n))  # a buffer of one changes nothing
    full = ds.shuffle(1000, seed=7)
    a, b = [int(v) for v in full], [int(v) for v in full]
    assert sorted(a) == sorted(b) == list(range(n)) and a != b and a != list(range(n))  # reshuffled per pass
    assert [int(v) for v in ds.shuffle(1000, seed=7)] == a  # seeded: the same passes again
    fixed = ds.shuffle(1000, seed=7, reshuffle_each_iteration=False)
    assert [int(v) for v in fixed] == [int(v) for v in fixed]
    # a buffer of k can emit element i no earlier than position i - (k - 1)
    k = 4
    for _ in range(5):
        order = [int(v) for v in ds.shuffle(k)]
        assert sorted(order) == list(range(n))
        assert all(pos >= v - (k - 1) for pos, v in enumerate(order))
    convkit.utils.set_random_seed(11)
    c = [int(v) for v in ds.shuffle(100)]
    convkit.utils.set_random_seed(11)
    assert [int(v) for v in ds.shuffle(100)] == c


def test_cache_replays_the_first_complete_pass():
    calls = []
    ds = Dataset.range(6).map(lambda v: calls.append(int(v)) or v * 10).cache()
    list(ds.take(2))  # a partial pass is not kept
    assert [int(v) for v in ds] == [0, 10, 20, 30, 40, 50]
    n_calls = len(calls)
    assert [int(v) for v in ds] == [0, 10, 20, 30, 40, 50] and len(calls) == n_calls


def test_prefetch_runs_ahead_in_a_background_thread_and_passes_errors_on():
    seen_threads = set()

    def where(v):
        seen_threads.add(threading.current_thread().name)
        return v

    ds = Dataset.range(20).map(where).prefetch(AUTOTUNE)
    assert [int(v) for v in ds] == list(range(20))
    assert seen_threads == {"convkit-prefetch"}
    before = threading.active_count()
    it = iter(Dataset.range(10**6).prefetch(4))
    next(it)
    it.close()  # the consumer stops: so does the producer
    for _ in range(50):
        if threading.active_count() <= before:
            break
        threading.Event().wait(0.02)
    assert threading.active_count() <= before

    def bad(v):
        if v == 3:
            raise ValueError("bad element 3")
        return v

    with pytest.raises(ValueError, match="bad element 3"):
        list(Dataset.range(5).map(bad).prefetch(2))


def test_fit_on_a_dataset_matches_fit_on_arrays_in_the_same_order():
    x, y = xy()
    arrays, piped = small_model(), small_model()
    arrays.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    ds = Dataset.from_tensor_slices((x, y)).batch(32).prefetch(AUTOTUNE)
    hist = piped.fit(ds, epochs=2, verbose=0)
    for a, b in zip(arrays.get_weights(), piped.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(hist.history["loss"]) == 2


def test_fit_on_a_shuffled_dataset_with_validation_data_as_a_dataset():
    x, y = xy(120)
    xv, yv = xy(40, np.random.default_rng(1))
    ds = Dataset.from_tensor_slices((x, y)).shuffle(1000, seed=5).batch(32).prefetch(AUTOTUNE)
    val_ds = Dataset.from_tensor_slices((xv, yv)).batch(32)
    piped = small_model()
    hist = piped.fit(ds, validation_data=val_ds, epochs=2, verbose=0)
    # the same orders, replayed on arrays one epoch at a time
    orders = Dataset.range(len(x)).shuffle(1000, seed=5)
    arrays = small_model()
    for epoch in range(2):
        order = np.array([int(v) for v in orders])
        h = arrays.fit(x[order], y[order], batch_size=32, shuffle=False, validation_data=(xv, yv), verbose=0)
        np.testing.assert_allclose(hist.history["val_loss"][epoch], h.history["val_loss"][0], rtol=1e-6)
    for a, b in zip(arrays.get_weights(), piped.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert piped.evaluate(val_ds, verbose=0) == pytest.approx(piped.evaluate(xv, yv, verbose=0), rel=1e-6)
    np.testing.assert_array_equal(piped.predict(val_ds, verbose=0), piped.predict(xv, verbose=0))
    # batches of 7 rows sum in another order than batches of 32: equal to float32 rounding
    np.testing.assert_allclose(piped.predict(Dataset.from_tensor_slices(xv).batch(7), verbose=0),
                               piped.predict(xv, verbose=0), rtol=1e-6, atol=1e-7)


def test_an_infinite_dataset_needs_steps_per_epoch():
    x, y = xy(64)
    ds = Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    model = small_model()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(ds, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="validation_steps"):
        model.fit(ds, steps_per_epoch=2, validation_data=ds, verbose=0)
    with pytest.raises(ValueError, match="steps"):
        model.predict(ds, verbose=0)
    steps = []
    cb = convkit.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))
    model.fit(ds, steps_per_epoch=6, epochs=2, callbacks=[cb], verbose=0)  # runs on across the 4-batch passes
    assert steps == list(range(6)) * 2
    assert model.predict(ds, steps=5, verbose=0).shape == (80, 2)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="batch_size must be positive"):
        Dataset.range(3).batch(0)
    with pytest.raises(ValueError, match="buffer_size"):
        Dataset.range(3).shuffle(0)
    with pytest.raises(ValueError, match="cannot be stacked"):
        list(Dataset.from_tensors(np.zeros(2)).concatenate(Dataset.from_tensors(np.zeros(3))).batch(2))
    with pytest.raises(TypeError, match="function"):
        Dataset.range(3).map(5)


def test_augmentation_layers_in_a_prefetched_map_run_beside_training():
    """The notes' pipeline: augment in ``map``, prefetch, fit. The background thread's layer calls
    must not land on the training step's tape."""
    x, y = xy(96)
    augment = convkit.Sequential([layers.RandomFlip("horizontal", seed=1), layers.RandomRotation(0.1, seed=2)])
    seen_recording = []

    def augment_batch(xb, yb):
        out = xb
        for _ in range(20):  # long enough to overlap the training steps
            seen_recording.append(convkit.layers.base.recording())
            out = augment(out, training=True)
        return out, yb

    ds = (Dataset.from_tensor_slices((x, y)).shuffle(96, seed=0).batch(8)
          .map(augment_batch, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE))
    model = small_model()
    hist = model.fit(ds, epochs=2, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    assert len(seen_recording) == 480 and not any(seen_recording)
    assert all(not layer._cache for layer in augment.layers + model.layers)
