"""Images preprocessed as TAO does, and the TensorFile written batch by batch."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stages.detectnet_v2.preprocessing import ImageError, iter_batches, list_images, load_image
from stages.formats.tensorfile import TensorFileWriter, describe, read_batches


def test_image_becomes_rgb_resized_scaled_nchw(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[..., 0] = 255
    Image.fromarray(pixels).save(tmp_path / "red.png")
    array = load_image(tmp_path / "red.png", 16, 8)
    assert array.shape == (3, 8, 16) and array.dtype == np.float32
    assert np.allclose(array[0], 1.0) and np.allclose(array[1:], 0.0)


def test_every_pixel_value_scales_to_the_bits_of_float32_x_over_255(tmp_path):
    # the one-pass conversion gives what converting first and scaling after gives, for every byte value
    pixels = np.arange(256 * 3, dtype=np.uint16).reshape(16, 16, 3) % 256
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "all.png")
    out = np.full((3, 16, 16), np.nan, np.float32)
    array = load_image(tmp_path / "all.png", 16, 16, out=out)
    expected = pixels.astype(np.float32)
    expected *= np.float32(1.0 / 255.0)
    assert array is out
    assert np.array_equal(array, expected.transpose(2, 0, 1))


def test_grayscale_image_is_converted_to_three_channels(tmp_path):
    Image.fromarray(np.full((10, 10), 51, np.uint8), "L").save(tmp_path / "gray.png")
    array = load_image(tmp_path / "gray.png", 10, 10)
    assert array.shape == (3, 10, 10)
    assert np.allclose(array, 51 / 255)


def test_corrupt_image_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageError, match="broken.png"):
        load_image(tmp_path / "broken.png", 8, 8)


def test_empty_directory_is_an_error_naming_it(tmp_path):
    with pytest.raises(ImageError, match=f"{tmp_path} holds no"):
        list_images(tmp_path)


def test_extension_narrows_the_images(tmp_path):
    for name in ("a.png", "b.jpg", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path, "png")] == ["a.png"]
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.jpg"]


def test_batches_keep_order_and_size(tmp_path):
    for i in range(5):
        Image.fromarray(np.full((4, 4, 3), i * 40, np.uint8)).save(tmp_path / f"{i}.png")
    batches = list(iter_batches(list_images(tmp_path), 2, 4, 4))
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    assert [round(float(b[0, 0, 0, 0]) * 255) for b in batches] == [0, 80, 160]


def test_non_positive_batch_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="batch size must be positive"):
        list(iter_batches([], 0, 4, 4))


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_tensorfile_round_trip(tmp_path, compression):
    data = [np.random.default_rng(i).random((2, 3, 4, 5), dtype=np.float32) for i in range(3)]
    with TensorFileWriter(tmp_path / "t.tensor", compression) as writer:
        for batch in data:
            writer.write(batch)
    assert describe(tmp_path / "t.tensor") == (3, (2, 3, 4, 5))
    for got, want in zip(read_batches(tmp_path / "t.tensor"), data):
        np.testing.assert_array_equal(got, want)


def test_tensorfile_rejects_a_batch_of_another_shape(tmp_path):
    with TensorFileWriter(tmp_path / "t.tensor") as writer:
        writer.write(np.zeros((2, 3, 4, 5), np.float32))
        with pytest.raises(ValueError, match=r"batch 1 has shape \(1, 3, 4, 5\)"):
            writer.write(np.zeros((1, 3, 4, 5), np.float32))


def test_reused_buffers_give_the_same_batches(tmp_path):
    for i in range(7):
        Image.fromarray(np.full((6, 6, 3), i * 30, np.uint8)).save(tmp_path / f"{i}.png")
    images = list_images(tmp_path)
    fresh = [b.copy() for b in iter_batches(images, 3, 6, 6)]
    reused = [b.copy() for b in iter_batches(images, 3, 6, 6, reuse=True)]
    assert [b.shape for b in reused] == [(3, 3, 6, 6), (3, 3, 6, 6), (1, 3, 6, 6)]
    for a, b in zip(fresh, reused):
        np.testing.assert_array_equal(a, b)
