"""Images preprocessed as TAO does, and the TensorFile written batch by batch."""
from __future__ import annotations

import mmap
import os
import time

import numpy as np
import pytest
from PIL import Image

from stages.detectnet_v2.preprocessing import ImageError, iter_batches, list_images, load_image
from stages.formats.aligned import aligned_empty
from stages.formats.tensorfile import TensorFileWriter, describe, read_batches

TAO_TENSORFILE = "nvidia_tao_deploy.engine.tensorfile"


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


def write_png16(path, values: np.ndarray) -> None:
    """A 16-bit PNG (grayscale from a 2-D array, RGB from 3-D), written chunk by chunk: Pillow cannot write
    16-bit RGB."""
    import struct
    import zlib
    height, width = values.shape[:2]
    raw = b"".join(b"\x00" + values[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 16, 0 if values.ndim == 2 else 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 3], ids=["grayscale", "rgb"])
def test_a_16_bit_png_reads_as_its_8_bit_twin_in_calibration_evaluation_and_serving(tmp_path, channels):
    """One loader serves the three (the tensorfile's and calibration's batches, evaluation's LANCZOS, the Triton
    preprocessing model): a 16-bit image is read by its values, scaled to 8 bits, not clipped to white."""
    shape = (48, 64) if channels == 1 else (48, 64, 3)
    eight = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(eight).save(tmp_path / "eight.png")
    write_png16(tmp_path / "sixteen.png", eight.astype(np.uint16) * 257)
    with Image.open(tmp_path / "sixteen.png") as opened:
        assert opened.mode == ("I;16" if channels == 1 else "RGB")  # the mode Pillow's own conversion clips
    for resample in (Image.BILINEAR, Image.LANCZOS):
        twin = load_image(tmp_path / "eight.png", 32, 16, resample)
        assert np.array_equal(load_image(tmp_path / "sixteen.png", 32, 16, resample), twin)
        with open(tmp_path / "sixteen.png", "rb") as received:  # as the server reads a request's bytes
            assert np.array_equal(load_image(received, 32, 16, resample), twin)
    assert 0.3 < float(twin.mean()) < 0.7  # not a white image


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


def test_a_truncated_tensorfile_is_named_with_the_stage_that_writes_it_again(tmp_path):
    path = tmp_path / "calibration.tensor"
    with TensorFileWriter(path) as writer:
        writer.write(np.ones((2, 3, 8, 8), np.float32))
    path.write_bytes(path.read_bytes()[:1000])  # a copy cut short
    for reader in (describe, lambda p: list(read_batches(p))):
        with pytest.raises(ValueError, match=rf"calibration tensorfile {path} cannot be read \(.*truncated.*\): it is "
                                             r"damaged or was cut short; .*dvc repro -f -s calibration_tensorfile"):
            reader(path)


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



def test_batches_decoded_ahead_never_overwrite_the_batch_the_caller_holds(tmp_path):
    """With more workers than images in a batch, several batches are decoded ahead into their own buffers:
    the one the caller holds stays as it was until the caller asks for the next."""
    for i in range(9):
        Image.fromarray(np.full((6, 6, 3), i * 25, np.uint8)).save(tmp_path / f"{i}.png")
    images = list_images(tmp_path)
    for index, batch in enumerate(iter_batches(images, 1, 6, 6, workers=2, reuse=True)):
        held = batch.copy()
        time.sleep(0.05)  # the batches ahead are decoded meanwhile
        np.testing.assert_array_equal(batch, held)
        np.testing.assert_allclose(batch, index * 25 / 255.0, rtol=1e-6)

def takes_o_direct(folder) -> bool:
    """Whether the file system under `folder` takes an O_DIRECT write (tmpfs before Linux 6.6 does not),
    probed with os alone: a page-aligned block from an anonymous mapping."""
    probe = folder / "probe"
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    except (AttributeError, OSError):
        return False
    try:
        os.pwrite(descriptor, mmap.mmap(-1, 4096), 0)
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)
        probe.unlink()


def write_all(path, batches) -> TensorFileWriter:
    with TensorFileWriter(path, None) as writer:
        for batch in batches:
            writer.write(batch)
    return writer


def test_decoded_batches_go_to_the_disk_directly_and_read_back_the_same_with_taos_reader(tmp_path):
    if not takes_o_direct(tmp_path):
        pytest.skip(f"the file system of {tmp_path} refuses O_DIRECT: the writer uses h5py there")
    tao = pytest.importorskip(TAO_TENSORFILE, reason="nvidia-tao-deploy is not installed")
    for i in range(6):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (30, 50, 3), np.uint8)).save(tmp_path / f"{i}.png")
    images = list_images(tmp_path)
    # 2x3x23x37 float32 is 20,424 bytes: five whole 4 KiB blocks go directly, the last 3,944 bytes do not
    writer = write_all(tmp_path / "t.tensor", iter_batches(images, 2, 37, 23, reuse=True))
    assert writer.direct_batches == 3
    expected = [batch.copy() for batch in iter_batches(images, 2, 37, 23)]
    reader = tao.TensorFile(str(tmp_path / "t.tensor"), "r")
    theirs = [reader.read() for _ in range(3)]
    for ours, taos, want in zip(read_batches(tmp_path / "t.tensor"), theirs, expected):
        np.testing.assert_array_equal(ours, want)
        np.testing.assert_array_equal(taos, want)


def off_alignment(batch: np.ndarray) -> np.ndarray:
    """A copy of the batch 4 bytes past numpy's own (16-byte) alignment: never on a 4 KiB boundary."""
    copy = np.empty(batch.size + 1, np.float32)[1:].reshape(batch.shape)
    copy[...] = batch
    return copy


def test_a_batch_not_aligned_in_memory_is_written_by_h5py(tmp_path):
    unaligned = off_alignment(np.random.default_rng(0).random((2, 3, 32, 64), dtype=np.float32))
    doubled = off_alignment(unaligned * 2)
    writer = write_all(tmp_path / "t.tensor", [unaligned, doubled])
    assert writer.direct_batches == 0
    got = list(read_batches(tmp_path / "t.tensor"))
    np.testing.assert_array_equal(got[0], unaligned)
    np.testing.assert_array_equal(got[1], doubled)


def test_the_file_is_the_same_to_the_byte_whether_o_direct_or_h5py_wrote_its_batches(tmp_path):
    """The tensorfile is identical on every machine (docs/explanation/reproducibility.md), whether or not
    its file system takes O_DIRECT."""
    if not takes_o_direct(tmp_path):
        pytest.skip(f"the file system of {tmp_path} refuses O_DIRECT: only h5py writes there")
    batches = []
    for seed in range(3):
        batch = aligned_empty((2, 3, 23, 37))
        batch[...] = np.random.default_rng(seed).random(batch.shape, dtype=np.float32)
        batches.append(batch)
    direct = write_all(tmp_path / "direct.tensor", batches)
    by_h5py = write_all(tmp_path / "h5py.tensor", [off_alignment(batch) for batch in batches])
    assert (direct.direct_batches, by_h5py.direct_batches) == (3, 0)
    assert (tmp_path / "direct.tensor").read_bytes() == (tmp_path / "h5py.tensor").read_bytes()
