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


def jpeg_bytes(**options) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((64, 32), 40).convert("RGB").save(out, "JPEG", **options)
    return out.getvalue()


def scans(jpeg: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan: its SOS marker to the next marker that is not a restart or stuffing."""
    import re
    starts = [m.start() for m in re.finditer(rb"\xff\xda", jpeg)]
    ends = [re.compile(rb"\xff(?!\x00|[\xd0-\xd7]|\xda)").search(jpeg, start + 2).start() for start in starts]
    return list(zip(starts, ends))


def test_a_baseline_and_a_progressive_jpeg_pass_with_their_scans_counted():
    from stages.formats.encoded_images import check_jpeg_scans

    assert check_jpeg_scans(jpeg_bytes()) == 1
    progressive = jpeg_bytes(progressive=True)
    assert check_jpeg_scans(progressive) == len(scans(progressive)) > 1
    assert image_format(progressive) == "JPEG"


def test_bytes_like_a_scan_marker_in_a_jpegs_metadata_are_not_counted():
    from stages.formats.encoded_images import check_jpeg_scans

    jpeg = jpeg_bytes()
    payload = b"\xff\xda" * 500  # an APP segment's bytes are anything: EXIF, an ICC profile, a thumbnail
    app = b"\xff\xe5" + struct.pack(">H", 2 + len(payload)) + payload
    assert check_jpeg_scans(jpeg[:2] + app + jpeg[2:]) == 1


def test_a_jpeg_flooded_with_scans_is_refused_before_decoding():
    from stages.formats.encoded_images import MAX_JPEG_SCANS

    progressive = jpeg_bytes(progressive=True)
    start, end = scans(progressive)[-1]  # the last refinement scan, again and again
    flood = progressive[:end] + progressive[start:end] * MAX_JPEG_SCANS + progressive[end:]
    with pytest.raises(EncodedImageError, match=f"a JPEG of {MAX_JPEG_SCANS + len(scans(progressive))} scans, more "
                                                f"than {MAX_JPEG_SCANS}"):
        image_format(flood)
