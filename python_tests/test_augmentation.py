"""Image augmentation: transforms on hand-made images, seeding, iterators and directory datasets."""

import json
import sys

import numpy as np
import pytest

from convkit.preprocessing import ImageDataGenerator, image_dataset_from_directory, load_image


def dot(h=5, w=5, r=2, c=4, channels=1):
    x = np.zeros((1, h, w, channels), np.float32)
    x[0, r, c] = 1.0
    return x


def ramp(n=3, h=6, w=7, c=2):
    return np.arange(n * h * w * c, dtype=np.float32).reshape(n, h, w, c)


# --------------------------------------------------------------------------------------------
# Deterministic transforms

def test_identity_settings_return_the_input():
    x = ramp(10)
    it = ImageDataGenerator().flow(x, np.arange(10), batch_size=4, shuffle=False)
    out = np.concatenate([next(it)[0] for _ in range(len(it))])
    np.testing.assert_array_equal(out, x)
    assert out.dtype == np.float32


def test_shift_moves_content_right_and_down():
    g = ImageDataGenerator(fill_mode="constant")
    out = g.apply_transform(dot(r=1, c=1), {"tx": [2], "ty": [1]})
    np.testing.assert_array_equal(out, dot(r=2, c=3))
    x = ramp(1)
    shifted = g.apply_transform(x, {"tx": [-3]})
    np.testing.assert_array_equal(shifted[:, :, :4], x[:, :, 3:])
    np.testing.assert_array_equal(shifted[:, :, 4:], 0)


@pytest.mark.parametrize("mode, pad", [("nearest", "edge"), ("reflect", "symmetric"), ("wrap", "wrap")])
def test_fill_modes_match_numpy_padding(mode, pad):
    x = ramp(2, 5, 6, 1)
    out = ImageDataGenerator(fill_mode=mode).apply_transform(x, {"tx": [3, -4], "ty": [-2, 5]})
    padded = np.pad(x, ((0, 0), (6, 6), (6, 6), (0, 0)), mode=pad)
    np.testing.assert_array_equal(out[0], padded[0, 6 + 2:6 + 2 + 5, 6 - 3:6 - 3 + 6])
    np.testing.assert_array_equal(out[1], padded[1, 6 - 5:6 - 5 + 5, 6 + 4:6 + 4 + 6])


def test_constant_fill_uses_cval():
    out = ImageDataGenerator(fill_mode="constant", cval=7).apply_transform(np.zeros((1, 4, 4, 1), np.float32),
                                                                            {"ty": [2]})
    np.testing.assert_array_equal(out[0, :2], 7)
    np.testing.assert_array_equal(out[0, 2:], 0)


def test_rotation_is_counter_clockwise_and_exact_at_right_angles():
    g = ImageDataGenerator(fill_mode="constant")
    np.testing.assert_array_equal(g.apply_transform(dot(r=2, c=4), {"theta": [90]}), dot(r=0, c=2))
    x = ramp(1, 5, 5, 1)
    np.testing.assert_array_equal(g.apply_transform(x, {"theta": [90]})[0], np.rot90(x[0]))
    np.testing.assert_array_equal(g.apply_transform(x, {"theta": [180]})[0], x[0, ::-1, ::-1])


def test_flips():
    x = ramp(2)
    g = ImageDataGenerator()
    out = g.apply_transform(x, {"flip_horizontal": [True, False], "flip_vertical": [False, True]})
    np.testing.assert_array_equal(out[0], x[0, :, ::-1])
    np.testing.assert_array_equal(out[1], x[1, ::-1])


def test_zoom_below_one_enlarges_about_the_centre():
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 1:4, 1:4] = 1  # 3x3 square in a 5x5 image
    out = ImageDataGenerator(fill_mode="constant").apply_transform(x, {"zx": [0.5], "zy": [0.5]})
    assert out[0, 2, 2, 0] == 1 and out[0].sum() > x[0].sum()
    out = ImageDataGenerator(fill_mode="constant").apply_transform(x, {"zx": [2.0], "zy": [2.0]})
    assert out[0].sum() < x[0].sum()


def test_shear_changes_the_image_and_zero_shear_does_not():
    x = ramp(1)
    g = ImageDataGenerator()
    np.testing.assert_array_equal(g.apply_transform(x, {"shear": [0.0]}), x)
    assert not np.allclose(g.apply_transform(x, {"shear": [20.0]}), x)


# --------------------------------------------------------------------------------------------
# Random transforms

def test_random_flips_give_the_image_or_its_mirror():
    x = np.repeat(ramp(1), 64, axis=0)
    out = ImageDataGenerator(horizontal_flip=True).random_transform(x, seed=1)
    flipped = np.array([np.array_equal(o, x[0, :, ::-1]) for o in out])
    same = np.array([np.array_equal(o, x[0]) for o in out])
    assert np.all(flipped | same) and 10 < flipped.sum() < 54


def test_random_pixel_shifts_stay_in_range():
    x = np.repeat(ramp(1, 6, 7, 1), 40, axis=0)
    g = ImageDataGenerator(width_shift_range=2, fill_mode="wrap")
    out = g.random_transform(x, seed=3)
    seen = set()
    for o in out:
        matches = [s for s in range(-2, 3) if np.array_equal(o, np.roll(x[0], s, axis=1))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) >= 4


def test_random_fractional_shift_range():
    g = ImageDataGenerator(height_shift_range=0.25, width_shift_range=(-0.1, 0.0))
    p = g.get_random_transforms(500, 40, 20, np.random.default_rng(0))
    assert np.abs(p["ty"]).max() <= 10 and np.abs(p["ty"]).max() > 8
    assert p["tx"].max() <= 0 and p["tx"].min() >= -2


def test_rotation_and_zoom_ranges():
    g = ImageDataGenerator(rotation_range=15, zoom_range=0.2)
    p = g.get_random_transforms(1000, 8, 8, np.random.default_rng(0))
    assert np.abs(p["theta"]).max() <= 15 and p["theta"].std() > 5
    assert p["zx"].min() >= 0.8 and p["zx"].max() <= 1.2 and not np.array_equal(p["zx"], p["zy"])


def full_epoch(it):
    return [next(it) for _ in range(len(it))]


def test_same_seed_same_batches_and_different_seed_differs():
    x, y = ramp(10, 8, 8, 3), np.arange(10)
    g = ImageDataGenerator(rotation_range=30, width_shift_range=0.2, zoom_range=0.1, shear_range=5,
                           horizontal_flip=True, vertical_flip=True)
    a = full_epoch(g.flow(x, y, batch_size=4, seed=7))
    it1, it2 = g.flow(x, y, batch_size=4, seed=7), g.flow(x, y, batch_size=4, seed=7)
    for _ in range(2 * len(it1)):  # two epochs
        (x1, y1), (x2, y2) = next(it1), next(it2)
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    b = full_epoch(g.flow(x, y, batch_size=4, seed=8))
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, b))


@pytest.mark.parametrize("taken", [0, 2, 3, 5])  # fresh, mid-pass, at a pass boundary, mid second pass
def test_iterator_state_resumes_the_same_batches(taken):
    x, y = ramp(10, 8, 8, 1), np.arange(10)
    g = ImageDataGenerator(rotation_range=20, width_shift_range=0.2)
    it = g.flow(x, y, batch_size=4, seed=3)
    for _ in range(taken):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint keeps
    expected = [next(it) for _ in range(4)]
    again = g.flow(x, y, batch_size=4, seed=99)  # the seed no longer matters
    again.set_state(state)
    for (x1, y1), (x2, y2) in zip(expected, (next(again) for _ in range(4))):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    if state["order"] is not None:
        with pytest.raises(ValueError, match="iterator state is for 10 samples"):
            g.flow(x[:6], y[:6], batch_size=4).set_state(state)


def test_flow_epochs_len_and_partial_last_batch():
    x, y = ramp(10, 4, 4, 1), np.arange(10)
    it = ImageDataGenerator().flow(x, y, batch_size=4, seed=0)
    assert len(it) == 3
    for _ in range(2):
        batches = full_epoch(it)
        assert [len(b[1]) for b in batches] == [4, 4, 2]
        labels = np.concatenate([b[1] for b in batches])
        assert sorted(labels.tolist()) == list(range(10))
        for xb, yb in batches:  # images still travel with their labels
            np.testing.assert_array_equal(xb, x[yb])
    assert ImageDataGenerator().flow(x, y, batch_size=4, shuffle=False).__next__()[1].tolist() == [0, 1, 2, 3]


def test_flow_without_labels_and_grayscale_input():
    x = np.random.default_rng(0).integers(0, 256, (5, 6, 6)).astype(np.uint8)
    xb = next(ImageDataGenerator().flow(x, batch_size=5, shuffle=False))
    assert isinstance(xb, np.ndarray) and xb.shape == (5, 6, 6, 1) and xb.dtype == np.float32
    with pytest.raises(ValueError, match="different lengths"):
        ImageDataGenerator().flow(x, np.arange(4))


def test_rescale_and_featurewise_standardisation():
    rng = np.random.default_rng(0)
    x = rng.normal([10, -3, 50], [2, 5, 9], size=(200, 4, 4, 3)).astype(np.float32)
    g = ImageDataGenerator(featurewise_center=True, featurewise_std_normalization=True, rescale=0.5)
    with pytest.raises(RuntimeError, match="fit"):
        next(g.flow(x))
    g.fit(x)
    np.testing.assert_allclose(g.mean.ravel(), (x * 0.5).mean(axis=(0, 1, 2)), rtol=1e-5)
    xb = next(g.flow(x, batch_size=200, shuffle=False))
    np.testing.assert_allclose(xb.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(xb.std(axis=(0, 1, 2)), 1, atol=1e-3)
    np.testing.assert_allclose(next(ImageDataGenerator(rescale=1 / 255).flow(x, shuffle=False)), x[:32] / 255,
                               rtol=1e-6)


def test_samplewise_standardisation():
    x = ramp(3)
    xb = next(ImageDataGenerator(samplewise_center=True, samplewise_std_normalization=True).flow(x, shuffle=False))
    np.testing.assert_allclose(xb.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(xb.std(axis=(1, 2, 3)), 1, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fill_mode"):
        ImageDataGenerator(fill_mode="mirror")
    with pytest.raises(ValueError, match="zoom_range"):
        ImageDataGenerator(zoom_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="batch_size"):
        ImageDataGenerator().flow(ramp(2), batch_size=0)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        ImageDataGenerator().flow(np.zeros((2, 3)))


# --------------------------------------------------------------------------------------------
# Directories of image files

@pytest.fixture
def image_tree(tmp_path):
    """Three classes (cats 4, dogs 3, owls 5) of distinct 10x12 RGB PNGs whose red value encodes class and index."""
    Image = pytest.importorskip("PIL.Image", reason="Pillow (convkit[image]) is not installed")
    counts = {"cats": 4, "dogs": 3, "owls": 5}
    for ci, (name, k) in enumerate(counts.items()):
        (tmp_path / name).mkdir()
        for i in range(k):
            arr = np.zeros((10, 12, 3), np.uint8)
            arr[..., 0] = 50 * ci + i
            arr[..., 1] = np.arange(12)[None, :] * 10
            Image.fromarray(arr).save(tmp_path / name / f"{i}.png")
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    return tmp_path


def red_codes(x):
    return sorted(int(v) for v in x[:, 0, 0, 0])


@pytest.mark.parametrize("class_mode", ["categorical", "sparse", None])
def test_flow_from_directory_class_modes(image_tree, class_mode):
    it = ImageDataGenerator().flow_from_directory(image_tree, target_size=(10, 12), class_mode=class_mode,
                                                  batch_size=5, shuffle=False)
    assert it.class_indices == {"cats": 0, "dogs": 1, "owls": 2} and it.samples == 12 and len(it) == 3
    batch = next(it)
    if class_mode is None:
        assert isinstance(batch, np.ndarray) and batch.shape == (5, 10, 12, 3)
        return
    xb, yb = batch
    assert xb.shape == (5, 10, 12, 3) and xb.dtype == np.float32 and yb.dtype == np.float32
    expected = [0, 0, 0, 0, 1]
    if class_mode == "categorical":
        np.testing.assert_array_equal(yb, np.eye(3)[expected])
    else:
        np.testing.assert_array_equal(yb, expected)
    assert red_codes(xb) == [0, 1, 2, 3, 50]
    np.testing.assert_array_equal(xb[0, :, :, 1], np.tile(np.arange(12) * 10, (10, 1)))


def test_flow_from_directory_binary_resize_and_grayscale(image_tree):
    it = ImageDataGenerator(rescale=1 / 255).flow_from_directory(
        image_tree, target_size=(5, 6), classes=["dogs", "owls"], class_mode="binary", color_mode="grayscale",
        batch_size=8, shuffle=False)
    xb, yb = next(it)
    assert xb.shape == (8, 5, 6, 1) and xb.max() <= 1.0
    np.testing.assert_array_equal(yb, [0, 0, 0, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="exactly 2 classes"):
        ImageDataGenerator().flow_from_directory(image_tree, class_mode="binary")


def test_flow_from_directory_subsets_are_disjoint(image_tree):
    g = ImageDataGenerator(validation_split=0.25)
    train = g.flow_from_directory(image_tree, target_size=(10, 12), subset="training", seed=1)
    val = g.flow_from_directory(image_tree, target_size=(10, 12), subset="validation", seed=1)
    assert set(train.filenames).isdisjoint(val.filenames)
    assert len(train.filenames) + len(val.filenames) == 12 and val.samples == 3  # round(0.25*4)+round(0.25*3)+round(0.25*5)
    with pytest.raises(ValueError, match="validation_split"):
        ImageDataGenerator().flow_from_directory(image_tree, subset="training")


def test_image_dataset_from_directory_split_and_labels(image_tree):
    kw = dict(image_size=(10, 12), batch_size=4, validation_split=0.25, seed=5)
    train = image_dataset_from_directory(image_tree, subset="training", **kw)
    val = image_dataset_from_directory(image_tree, subset="validation", label_mode="categorical", **kw)
    assert train.class_names == ["cats", "dogs", "owls"]
    assert set(train.file_paths).isdisjoint(val.file_paths)
    assert len(train.file_paths) == 9 and len(val.file_paths) == 3 and len(train) == 3 and len(val) == 1
    codes = []
    for xb, yb in train:
        assert xb.dtype == np.float32 and xb.shape[1:] == (10, 12, 3) and yb.dtype == np.int32
        np.testing.assert_array_equal(xb[:, 0, 0, 0] // 50, yb)  # label matches the image's class
        codes += red_codes(xb)
    (xv, yv), = list(val)
    assert yv.shape == (3, 3) and np.all(yv.sum(axis=1) == 1)
    assert len(set(codes) | set(red_codes(xv))) == 12
    both = image_dataset_from_directory(image_tree, subset="both", **kw)
    assert both[0].file_paths == train.file_paths and both[1].file_paths == val.file_paths


def test_image_dataset_shuffle_is_seeded_and_changes_per_epoch(image_tree):
    make = lambda seed: image_dataset_from_directory(image_tree, image_size=(10, 12), batch_size=12, seed=seed)
    a, b = make(3), make(3)
    ea1, eb1 = next(iter(a))[0], next(iter(b))[0]
    np.testing.assert_array_equal(ea1, eb1)
    ea2 = next(iter(a))[0]
    assert not np.array_equal(ea1, ea2) and red_codes(ea1) == red_codes(ea2)
    ordered = image_dataset_from_directory(image_tree, image_size=(10, 12), batch_size=12, shuffle=False)
    assert next(iter(ordered))[1].tolist() == [0] * 4 + [1] * 3 + [2] * 5


def test_image_dataset_argument_checks(image_tree):
    with pytest.raises(ValueError, match="seed"):
        image_dataset_from_directory(image_tree, validation_split=0.2, subset="training")
    with pytest.raises(ValueError, match="exactly 2 classes"):
        image_dataset_from_directory(image_tree, label_mode="binary")
    ds = image_dataset_from_directory(image_tree, label_mode=None, image_size=(3, 3), batch_size=20)
    assert next(iter(ds)).shape == (12, 3, 3, 3)


def test_unreadable_image_names_the_file(image_tree):
    bad = image_tree / "dogs" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(bad)


def test_missing_pillow_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"convkit\[image\]"):
        load_image(tmp_path / "x.png")


# --------------------------------------------------------------------------------------------
# The resampler against SciPy's, an implementation written elsewhere

@pytest.mark.parametrize("mode, scipy_mode", [("constant", "grid-constant"), ("nearest", "nearest"),
                                              ("reflect", "reflect"), ("wrap", "grid-wrap")])
def test_affine_batch_matches_scipy_ndimage(rng, mode, scipy_mode):
    ndimage = pytest.importorskip("scipy.ndimage")

    from convkit._transform import affine_batch

    n, h, w, c = 4, 9, 11, 2
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    # Random rotations, shears, zooms and shifts large enough to read well outside the image.
    m = np.eye(2) + rng.uniform(-0.6, 0.6, (n, 2, 2))
    offsets = rng.uniform(-6, 6, (n, 2))
    out = affine_batch(x, m, offsets, mode, cval=0.5)
    for b in range(n):
        for ch in range(c):
            want = ndimage.affine_transform(x[b, :, :, ch].astype(np.float64), m[b], offsets[b], order=1,
                                            mode=scipy_mode, cval=0.5, prefilter=False)
            np.testing.assert_allclose(out[b, :, :, ch], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["constant", "nearest", "reflect", "wrap"])
def test_augmentation_on_the_gpu_matches_the_cpu(rng, mode):
    """Images held by CuPy are transformed on the GPU, with the same random draws as on the host."""
    import convkit
    from convkit._device import to_device, to_numpy, xp_of

    if not convkit.has_cuda():
        pytest.skip(f"CUDA {convkit.cuda_status()}")
    x = rng.uniform(0, 255, (20, 12, 10, 3)).astype(np.float32)
    y = np.arange(20)
    gen = ImageDataGenerator(rotation_range=30, width_shift_range=0.2, height_shift_range=2, shear_range=10,
                             zoom_range=0.2, horizontal_flip=True, vertical_flip=True, rescale=1 / 255,
                             fill_mode=mode, cval=0.3, featurewise_center=True,
                             featurewise_std_normalization=True)
    gen.fit(to_device(x, "cuda"))
    mean, std = gen.mean, gen.std
    gen.fit(x)
    np.testing.assert_allclose(mean, gen.mean, rtol=1e-5)
    np.testing.assert_allclose(std, gen.std, rtol=1e-5)
    on_gpu = gen.flow(to_device(x, "cuda"), y, batch_size=8, seed=3)
    on_cpu = gen.flow(x, y, batch_size=8, seed=3)
    for _ in range(len(on_cpu) + 1):
        (xg, yg), (xc, yc) = next(on_gpu), next(on_cpu)
        assert xp_of(xg) is not np and xp_of(yg) is np
        np.testing.assert_array_equal(yg, yc)
        np.testing.assert_allclose(to_numpy(xg), xc, rtol=1e-4, atol=1e-4)


def test_append_augmented_enlarges_once_and_keeps_labels_with_their_images():
    from convkit.preprocessing import append_augmented

    y = np.arange(30) % 7
    x = np.broadcast_to(y[:, None, None, None], (30, 8, 8, 1)).astype(np.float32)  # image i is all y[i]
    gen = ImageDataGenerator(rotation_range=40, width_shift_range=0.3, zoom_range=0.2, horizontal_flip=True,
                             fill_mode="nearest")
    xa, ya = append_augmented(gen, x, y, 45, seed=1, chunk=16)
    assert xa.shape == (75, 8, 8, 1) and ya.shape == (75,)
    # A constant image stays constant under any transform with 'nearest' fill: labels followed images.
    np.testing.assert_allclose(xa.reshape(75, -1), np.broadcast_to(ya[:, None], (75, 64)), atol=1e-5)
    assert (np.bincount(ya, minlength=7) >= np.bincount(y, minlength=7)).all()  # every original kept
    assert not np.array_equal(ya[:30], y)  # shuffled together
    xb, yb = append_augmented(gen, x, y, 45, seed=1)
    np.testing.assert_array_equal(yb, ya)
    np.testing.assert_array_equal(xb, xa)
    assert not np.array_equal(append_augmented(gen, x, y, 45, seed=2)[1], ya)
    # Augmented copies differ from their originals.
    ramp_x = ramp(4, 8, 8, 1)
    xr, _ = append_augmented(gen, ramp_x, np.arange(4), 8, seed=0)
    assert sum(not any(np.array_equal(im, o) for o in ramp_x) for im in xr) >= 6
    with pytest.raises(ValueError, match="different lengths"):
        append_augmented(gen, x, y[:5], 3)


# --------------------------------------------------------------------------------------------
# The notes' iterator and dataset idioms

def test_iterators_support_next_indexing_and_len(image_tree, capsys):
    x = ramp(10)
    it = ImageDataGenerator().flow(x, np.arange(10), batch_size=4, shuffle=False)
    assert len(it) == 3
    np.testing.assert_array_equal(it[2][0], x[8:])  # batch i of the epoch, without moving the iterator
    np.testing.assert_array_equal(it[-1][1], [8, 9])
    with pytest.warns(DeprecationWarning, match="next"):
        np.testing.assert_array_equal(it.next()[0], x[:4])  # tf.keras 2's spelling
    np.testing.assert_array_equal(next(it)[0], x[4:8])
    with pytest.raises(IndexError, match="batch 3"):
        it[3]
    shuffled = ImageDataGenerator().flow(x, np.arange(10), batch_size=4, seed=1)
    first = shuffled[0][1]
    np.testing.assert_array_equal(next(shuffled)[1], first)  # indexing and iterating share the epoch's order
    capsys.readouterr()
    d = ImageDataGenerator().flow_from_directory(image_tree, target_size=(10, 12), batch_size=5, shuffle=False)
    assert capsys.readouterr().out == "Found 12 images belonging to 3 classes.\n"
    assert len(d) == 3 and d[2][0].shape == (2, 10, 12, 3)
    np.testing.assert_array_equal(next(d)[1], d[0][1])
    assert d.filepaths[0].endswith("0.png") and list(d.labels) == [0] * 4 + [1] * 3 + [2] * 5


def test_image_dataset_is_a_dataset_for_tf_data_pipelines(image_tree, capsys):
    from convkit.data import AUTOTUNE, Dataset

    kw = dict(image_size=(10, 12), batch_size=4, validation_split=0.25, seed=5)
    train = image_dataset_from_directory(image_tree, subset="training", **kw)
    val = image_dataset_from_directory(image_tree, subset="validation", **kw)
    out = capsys.readouterr().out
    assert out.startswith("Found 12 files belonging to 3 classes.\nUsing 9 files for training.\n")
    assert out.endswith("Using 3 files for validation.\n")
    assert isinstance(train, Dataset) and train.class_names == ["cats", "dogs", "owls"]
    normalized = train.map(lambda x, y: (x / 255.0, y)).cache().prefetch(buffer_size=AUTOTUNE)
    batches = list(normalized)
    assert len(batches) == 3 and all(float(xb.max()) <= 1.0 for xb, _ in batches)
    assert sorted(int(v) for v in train.unbatch().map(lambda x, y: y)) == sorted(train.labels.tolist())
    import convkit
    from convkit import layers

    model = convkit.Sequential([layers.Input((10, 12, 3)), layers.Rescaling(1 / 255), layers.Flatten(),
                                layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(normalized.map(lambda x, y: (x * 255.0, y)), validation_data=val, epochs=2, verbose=0)
    assert len(hist.history["val_accuracy"]) == 2


# --------------------------------------------------------------------------------------------
# flow_from_dataframe, against Keras's own (its legacy ImageDataGenerator, on the PyTorch backend)

@pytest.fixture
def image_frame(image_tree):
    """A DataFrame naming the tree's images (plus a missing file and a text file) with string, multi-label,
    numeric and weight columns."""
    pd = pytest.importorskip("pandas")
    names = [f"{c}/{i}.png" for c, k in (("cats", 4), ("dogs", 3), ("owls", 5)) for i in range(k)]
    rows = [(n, n.split("/")[0], (n.split("/")[0], "pets") if n[0] != "o" else ("owls",), i * 0.5, i % 3 + 1.0)
            for i, n in enumerate(names)]
    rows += [("cats/missing.png", "cats", ("cats",), 9.0, 1.0), ("cats/notes.txt", "cats", ("cats",), 9.0, 1.0)]
    return pd.DataFrame(rows, columns=["filename", "class", "tags", "score", "weight"])


def keras_legacy_generator(**kwargs):
    import os
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("keras")
    pytest.importorskip("scipy")
    from keras.src.legacy.preprocessing.image import ImageDataGenerator as KerasGenerator
    return KerasGenerator(**kwargs)


@pytest.mark.parametrize("kw", [
    dict(class_mode="categorical"),
    dict(class_mode="sparse", classes=["owls", "cats"]),
    dict(class_mode="binary", classes=["dogs", "owls"], weight_col="weight"),
    dict(class_mode="categorical", y_col="tags"),
    dict(class_mode="raw", y_col="score"),
    dict(class_mode="multi_output", y_col=["score", "weight"]),
    dict(class_mode="input"),
    dict(class_mode=None),
    dict(class_mode="categorical", subset="validation"),
    dict(class_mode="categorical", subset="training"),
], ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_flow_from_dataframe_matches_keras(image_tree, image_frame, kw, capsys):
    kw = dict(kw)
    split = 0.25 if "subset" in kw else 0.0
    common = dict(directory=str(image_tree), target_size=(10, 12), batch_size=5, shuffle=False, **kw)
    with pytest.warns(UserWarning, match="2 invalid image filename"):
        ours = ImageDataGenerator(validation_split=split).flow_from_dataframe(image_frame, **common)
    ours_said = capsys.readouterr().out
    with pytest.warns(UserWarning, match="2 invalid image filename"):
        theirs = keras_legacy_generator(validation_split=split).flow_from_dataframe(image_frame, **common)
    assert ours_said == capsys.readouterr().out  # "Found N validated image filenames belonging to K classes."
    assert ours.filenames == theirs.filenames and ours.samples == theirs.samples and len(ours) == len(theirs)
    assert ours.filepaths == theirs.filepaths
    if kw["class_mode"] in ("categorical", "sparse", "binary"):
        assert ours.class_indices == theirs.class_indices and ours.classes == theirs.classes
    for i in range(len(ours)):
        a, b = ours[i], theirs[i]
        a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
        assert len(a) == len(b)
        for u, v in zip(a, b):
            for p, q in zip(u, v) if isinstance(u, list) else [(u, v)]:
                np.testing.assert_allclose(np.asarray(p, np.float64), np.asarray(q, np.float64), rtol=0, atol=0)


def test_flow_from_dataframe_errors(image_tree, image_frame):
    g = ImageDataGenerator()
    with pytest.raises(KeyError, match="no column 'path'"):
        g.flow_from_dataframe(image_frame, str(image_tree), x_col="path")
    with pytest.raises(ValueError, match="class_mode must be one of"):
        g.flow_from_dataframe(image_frame, str(image_tree), class_mode="one-hot")
    with pytest.raises(TypeError, match="y_col to be a list"):
        g.flow_from_dataframe(image_frame, str(image_tree), class_mode="multi_output", y_col="score")
    with pytest.raises(TypeError, match="values to be strings"):
        g.flow_from_dataframe(image_frame, str(image_tree), class_mode="sparse", y_col="score",
                              validate_filenames=False)
    with pytest.raises(ValueError, match="exactly 2 classes"):
        g.flow_from_dataframe(image_frame, str(image_tree), class_mode="binary", validate_filenames=False)
