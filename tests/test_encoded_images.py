"""Encoded images checked before any decoder runs (formats/encoded_images.py): the signature of one of the
three formats the project reads, and a PNG's chunks bounded, as the server and the shared loader use them."""
from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from stages.detectnet_v2.preprocessing import ImageError, load_image
from stages.formats.encoded_images import MAX_PNG_CHUNKS, EncodedImageError, check_png_chunks, image_format

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 640 480\n" + b"%" * 4096


def png_bytes(size=(64, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


def flooded(png: bytes, chunks: int) -> bytes:
    """A valid PNG with `chunks` empty private ancillary chunks before its pixels (each CRC right)."""
    empty = struct.pack(">I", 0) + b"zzZz" + struct.pack(">I", zlib.crc32(b"zzZz"))
    header_end = 8 + 8 + 13 + 4  # the signature, then IHDR
    return png[:header_end] + empty * chunks + png[header_end:]


@pytest.mark.parametrize("name", ["PNG", "JPEG", "BMP"])
def test_the_three_formats_are_told_by_their_first_bytes(name):
    out = io.BytesIO()
    Image.new("RGB", (16, 8)).save(out, name)
    assert image_format(out.getvalue()) == name


def test_an_eps_file_is_refused_before_any_decoder_sees_it(tmp_path):
    with pytest.raises(EncodedImageError, match="not a PNG, JPEG or BMP"):
        image_format(EPS)
    (tmp_path / "image.png").write_bytes(EPS)  # the shared loader: no format but the three is tried
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(tmp_path / "image.png", 16, 8)


def test_a_png_flooded_with_chunks_is_refused_by_count_and_a_real_one_is_not():
    png = png_bytes()
    assert check_png_chunks(png) == 3  # IHDR, IDAT, IEND
    assert image_format(flooded(png, 1000)) == "PNG"
    with Image.open(io.BytesIO(flooded(png, 1000))) as opened:  # the chunks are valid: Pillow reads it
        assert opened.size == (64, 32)
    with pytest.raises(EncodedImageError, match=f"a PNG of more than {MAX_PNG_CHUNKS} chunks"):
        image_format(flooded(png, MAX_PNG_CHUNKS + 1))
