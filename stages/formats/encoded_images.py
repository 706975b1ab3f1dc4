"""Encoded images as a server receives them, checked before any decoder runs: the format their first bytes
(the signature) say, of the three this project reads (PNG, JPEG, BMP; Pillow would try every format it
knows, EPS among them, whose reader hands the bytes to Ghostscript), and, for a PNG, a bounded number of
chunks (Pillow reads a PNG's chunks one Python call at a time, so millions of empty ancillary chunks in a
file under the size limit take it most of a minute: bench/README.md, "Measurements behind the code"), and,
for a JPEG, a bounded number of scans (libjpeg decodes a progressive JPEG
scan by scan over the whole image, and Pillow sets no scan limit). The chunk walk is written here because
no library offers a check that stops at a count without parsing what it counts."""
from __future__ import annotations

READ_FORMATS = ("PNG", "JPEG", "BMP")  # Pillow's names: the formats the project decodes, and no other
SIGNATURES = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff", "BMP": b"BM"}
MAX_PNG_CHUNKS = 65536  # a 32 MiB PNG in libpng's 8 KiB IDAT chunks has 4096
# a baseline JPEG has 1 scan, libjpeg's progressive script 10, mozjpeg's a few more; libjpeg-turbo's own
# example limit for untrusted input (TJPARAM_SCANLIMIT) is 500; each scan decodes the whole image again
MAX_JPEG_SCANS = 100


class EncodedImageError(ValueError):
    """Bytes this project will not hand to a decoder; the message is what a client may read."""


def image_format(data: bytes) -> str:
    """The format the bytes' signature says (one of READ_FORMATS), or EncodedImageError."""
    for name, signature in SIGNATURES.items():
        if data.startswith(signature):
            if name == "PNG":
                check_png_chunks(data)
            elif name == "JPEG":
                check_jpeg_scans(data)
            return name
    raise EncodedImageError("not a PNG, JPEG or BMP (its first bytes are no signature of those)")


def check_png_chunks(data: bytes, limit: int = MAX_PNG_CHUNKS) -> int:
    """The number of chunks of a PNG up to IEND (or the end of the bytes); EncodedImageError past `limit`."""
    offset, count = len(SIGNATURES["PNG"]), 0
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        kind = data[offset + 4:offset + 8]
        offset += 12 + length  # length, type, data, CRC
        count += 1
        if count > limit:
            raise EncodedImageError(f"a PNG of more than {limit} chunks (a real image of this size has a few "
                                    "thousand): refused before decoding")
        if kind == b"IEND":
            break
    return count


def check_jpeg_scans(data: bytes, limit: int = MAX_JPEG_SCANS) -> int:
    """The number of scans of a JPEG (its SOS markers); EncodedImageError past `limit`. The segments before
    the first scan (EXIF, ICC profiles, a thumbnail: any bytes) are stepped over by their lengths; after it,
    entropy-coded data stuffs every 0xFF with 0x00, so the bytes FF DA start a scan and nothing else."""
    offset = 2  # after SOI
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF:  # fill bytes before a marker
            offset += 1
            continue
        if marker == 0xDA:
            break
        offset += 2 + int.from_bytes(data[offset + 2:offset + 4], "big")
    count = data.count(b"\xff\xda", offset)
    if count > limit:
        raise EncodedImageError(f"a JPEG of {count} scans, more than {limit} (a real image has 1 to a few tens): "
                                "refused before decoding")
    return count
