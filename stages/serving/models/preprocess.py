"""detectnet_v2_preprocess: encoded images (TYPE_STRING) -> the model input as TAO's inference and the
evaluate stage preprocess it (RGB, resized with LANCZOS to the input size, scaled to [0, 1], CHW), and
each image's original (width, height).

What a client sends is checked before any pixel is decoded, and refused with a short error that names
the input and the reason (never a traceback, a server path or a Python object):
  - a request whose encoded images hold more than MAX_REQUEST_BYTES (triton.max_request_bytes);
  - an empty image, or bytes Pillow cannot identify;
  - an image whose header gives more than MAX_IMAGE_PIXELS (triton.max_image_pixels), or a request whose
    images' headers give more than that in all: a decompression bomb is a few hundred KB that decode to
    gigabytes, and the decoding a request may cost is bounded whatever number of images it holds;
  - an image smaller than 1/MAX_UPSCALE of the model input on a side: stretched that far it holds no
    object the model was trained on, yet the model still "detects" (a 1x1 PNG got 43 detections);
  - a truncated or corrupt image, found while decoding."""
import io
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

MAX_UPSCALE = 8  # the smallest image served: 1/8 of the model input's width and height
# After a batch that decoded this many pixels, the freed memory goes back to the system: glibc keeps what
# the decoding threads freed in their arenas (a burst of large images leaves the server well above its idle
# size: bench/README.md, "Measurements behind the code"), and only malloc_trim hands it back. No library wraps it; ctypes reaches it where glibc is.
TRIM_AFTER_PIXELS = 16_000_000


def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


class Refused(Exception):
    """A request this model answers with an error: the message is what the client reads."""


class TritonPythonModel:
    def initialize(self, args):
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # the project modules copied beside me
        import triton_python_backend_utils as pb_utils
        from PIL import Image

        from stages.compute.workers import worker_count
        from stages.detectnet_v2.preprocessing import EVALUATION_RESAMPLE

        self.pb_utils = pb_utils
        parameters = json.loads(args["model_config"])["parameters"]
        self.width = int(parameters["INPUT_WIDTH"]["string_value"])
        self.height = int(parameters["INPUT_HEIGHT"]["string_value"])
        self.max_pixels = int(parameters["MAX_IMAGE_PIXELS"]["string_value"])
        self.max_bytes = int(parameters["MAX_REQUEST_BYTES"]["string_value"])
        self.resample = EVALUATION_RESAMPLE
        self.pool = ThreadPoolExecutor(worker_count())
        self.trim = _malloc_trim()
        # this model's cap, checked on the header, replaces Pillow's (179 megapixels, a warning below that)
        Image.MAX_IMAGE_PIXELS = None

    def execute(self, requests):
        """Every image of the requests Triton batched together is decoded at once, on all cores: Pillow
        releases the GIL while it decodes and resizes, so threads do what more instances would, without
        a process each."""
        planned = [self._answer(self._plan, request) for request in requests]
        # (request index, row, encoded image, the row of the request's batch it is decoded into)
        jobs = [(index, row, data, plan[0][row]) for index, plan in enumerate(planned) if isinstance(plan, tuple)
                for row, (data, _) in enumerate(plan[1])]
        failures = {}  # request index -> the error response of its first image that could not be decoded
        for (index, *_), failed in zip(jobs, self.pool.map(lambda job: self._answer(self._decode, *job[1:]), jobs)):
            if failed is not None:
                failures.setdefault(index, failed)
        responses = []
        for index, plan in enumerate(planned):
            if not isinstance(plan, tuple):
                responses.append(plan)  # refused before decoding
            elif index in failures:
                responses.append(failures[index])
            else:
                batch, images = plan
                sizes = np.array([size for _, size in images], np.int32).reshape(-1, 2)
                responses.append(self.pb_utils.InferenceResponse(output_tensors=[
                    self.pb_utils.Tensor("input_1", batch), self.pb_utils.Tensor("ORIGINAL_SIZE", sizes)]))
        decoded = sum(size[0] * size[1] for plan in planned if isinstance(plan, tuple) for _, size in plan[1])
        if self.trim is not None and decoded >= TRIM_AFTER_PIXELS:
            self.trim(0)
        return responses

    def _answer(self, step, *args):
        """step(*args), or the error response a client reads when it fails."""
        pb_utils = self.pb_utils
        try:
            return step(*args)
        except Refused as exc:  # the client's fault: INVALID_ARG, which Triton answers with HTTP 400
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        except Exception as exc:  # noqa: BLE001 - a client gets one line; the server's log gets the rest
            _log_error(pb_utils, f"detectnet_v2_preprocess: {type(exc).__name__}: {exc}")
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"IMAGE could not be preprocessed ({type(exc).__name__}); the server's log says more"))

    def _plan(self, request):
        """The request's batch buffer and [(encoded image, (width, height))], every header checked: what
        can be refused without decoding is refused here."""
        tensor = self.pb_utils.get_input_tensor_by_name(request, "IMAGE")
        if tensor is None:
            raise Refused("the request has no input IMAGE (one encoded image, PNG, JPEG or BMP, per row)")
        encoded = [bytes(data) for data in tensor.as_numpy().reshape(-1)]
        if not encoded:
            raise Refused("IMAGE holds no image: send one encoded image (PNG, JPEG or BMP) per row")
        total = sum(len(data) for data in encoded)
        if total > self.max_bytes:
            raise Refused(f"IMAGE holds {total} bytes, more than this server takes in one request "
                          f"(triton.max_request_bytes {self.max_bytes})")
        images = [(data, self._checked_size(index, data)) for index, data in enumerate(encoded)]
        pixels = sum(width * height for _, (width, height) in images)
        if pixels > self.max_pixels:  # one request's decoding is bounded, whatever number of images hold it
            raise Refused(f"IMAGE holds {len(images)} images of {pixels} pixels in all, more than this server "
                          f"decodes for one request (triton.max_image_pixels {self.max_pixels}); none was decoded")
        return np.empty((len(encoded), 3, self.height, self.width), np.float32), images

    def _checked_size(self, index: int, data: bytes) -> tuple[int, int]:
        from PIL import Image, UnidentifiedImageError

        from stages.formats.encoded_images import EncodedImageError, image_format

        name = f"IMAGE[{index}]"
        unreadable = f"{name} is not an image this server can read ({len(data)} bytes)"
        if not data:
            raise Refused(f"{name} is empty (0 bytes): send an encoded image (PNG, JPEG or BMP)")
        try:
            # the signature names the one decoder tried; a PNG's chunks are counted first
            with Image.open(io.BytesIO(data), formats=[image_format(data)]) as image:  # reads the header only
                width, height = image.size
        except EncodedImageError as exc:
            raise Refused(f"{unreadable}: {exc}") from None
        except UnidentifiedImageError:
            raise Refused(f"{unreadable}: not a PNG, JPEG or BMP that Pillow reads") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise Refused(f"{unreadable}: {_plain(exc)}") from None
        if width * height > self.max_pixels:
            raise Refused(f"{name} is {width}x{height}, {width * height} pixels, more than this server decodes "
                          f"(triton.max_image_pixels {self.max_pixels}); it was not decoded")
        if width * MAX_UPSCALE < self.width or height * MAX_UPSCALE < self.height:
            raise Refused(f"{name} is {width}x{height}, smaller than 1/{MAX_UPSCALE} of the model's input "
                          f"{self.width}x{self.height} on a side: too small to find objects in")
        return width, height

    def _decode(self, index: int, data: bytes, out: np.ndarray) -> None:
        from stages.detectnet_v2.preprocessing import ImageError, load_image

        try:
            load_image(io.BytesIO(data), self.width, self.height, self.resample, out)
        except ImageError as exc:
            raise Refused(f"IMAGE[{index}] is not an image this server can read ({len(data)} bytes): "
                          f"{_plain(exc.__cause__ or exc)}") from None


def _log_error(pb_utils, message: str) -> None:
    logger = getattr(pb_utils, "Logger", None)  # Triton 23.04 and later
    if logger is not None:
        logger.log_error(message)


def _plain(exc: BaseException) -> str:
    """An exception's message without a Python object's repr or a file path: what a client may read."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", str(exc))
    text = re.sub(r"(?<![\w.])/[^\s'\"]+", "<path>", text)
    return text.removeprefix("cannot read image data: ") or type(exc).__name__
