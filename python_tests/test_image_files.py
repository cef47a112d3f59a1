"""load_img / img_to_array / array_to_img / save_img as the notes call them, against Keras's own."""

import io
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

import convkit
from convkit.preprocessing import image

Image = pytest.importorskip("PIL.Image", reason="Pillow (convkit[image]) is not installed")
keras = pytest.importorskip("keras")


@pytest.fixture
def photo(tmp_path, rng):
    """A 20x30 RGB PNG of random pixels."""
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
    return path


def test_the_helpers_are_in_both_places_keras_has_them():
    for name in ("load_img", "img_to_array", "array_to_img", "save_img"):
        assert getattr(convkit.utils, name) is getattr(image, name)
    assert convkit.utils.image_dataset_from_directory is convkit.preprocessing.image_dataset_from_directory


@pytest.mark.parametrize("kw", [{}, {"target_size": (8, 12)}, {"target_size": (40, 50), "interpolation": "bilinear"},
                                {"color_mode": "grayscale", "target_size": (10, 10), "interpolation": "bicubic"},
                                {"color_mode": "rgba"}, {"target_size": (10, 10), "keep_aspect_ratio": True}])
def test_load_img_and_img_to_array_match_keras(photo, kw):
    ours = image.load_img(photo, **kw)
    theirs = keras.utils.load_img(photo, **kw)
    assert isinstance(ours, Image.Image) and ours.mode == theirs.mode and ours.size == theirs.size
    a = image.img_to_array(ours)
    np.testing.assert_array_equal(a, keras.utils.img_to_array(theirs))
    assert a.dtype == np.float32 and a.ndim == 3
    with open(photo, "rb") as f:  # a file object works too
        np.testing.assert_array_equal(image.img_to_array(image.load_img(io.BytesIO(f.read()), **kw)), a)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("scale", [True, False])
def test_array_to_img_matches_keras(rng, channels, scale):
    x = (rng.random((6, 7, channels)) * (1.0 if scale else 255.0)).astype(np.float32)
    ours, theirs = image.array_to_img(x, scale=scale), keras.utils.array_to_img(x, scale=scale)
    assert ours.mode == theirs.mode and ours.size == (7, 6)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_save_img_round_trips_and_is_atomic(tmp_path, rng):
    x = rng.integers(0, 256, (9, 11, 3)).astype(np.float32)
    path = tmp_path / "out.png"
    image.save_img(path, x, scale=False)
    np.testing.assert_array_equal(image.img_to_array(image.load_img(path)), x)
    image.save_img(tmp_path / "gray.jpg", x[..., :1] / 255.0)  # scaled onto [0, 255], JPEG from the name
    assert image.load_img(tmp_path / "gray.jpg", color_mode="grayscale").size == (11, 9)
    assert sorted(os.listdir(tmp_path)) == ["gray.jpg", "out.png"]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="color_mode"):
        image.load_img(tmp_path / "x.png", color_mode="cmyk")
    with pytest.raises(ValueError, match="interpolation"):
        image.load_img(tmp_path / "x.png", interpolation="cubic")
    with pytest.raises(FileNotFoundError, match="x.png"):
        image.load_img(tmp_path / "x.png")
    with pytest.raises(TypeError, match="path"):
        image.load_img(42)
    with pytest.raises(ValueError, match="C in 1, 3 or 4"):
        image.array_to_img(np.zeros((4, 4, 2)))
