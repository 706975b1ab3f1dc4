"""detectnet_v2_preprocess: encoded images (TYPE_STRING) -> the model input as TAO's inference and the
evaluate stage preprocess it (RGB, resized with LANCZOS to the input size, scaled to [0, 1], CHW), and
each image's original (width, height).

What a client sends is checked before any pixel is decoded, and refused with a short error that names
the input and the reason (never a traceback, a server path or a Python object):
  - a request whose encoded images hold more than MAX_REQUEST_BYTES (triton.max_request_bytes);
  - an empty image, or bytes Pillow cannot identify;
  - an image whose header gives more than MAX_IMAGE_PIXELS (triton.max_image_pixels): a decompression
    bomb is a few hundred KB that decode to gigabytes;
  - an image smaller than 1/MAX_UPSCALE of the model input on a side: stretched that far it holds no
    object the model was trained on, yet the model still "detects" (a 1x1 PNG got 43 detections);
  - a truncated or corrupt image, found while decoding."""
import io
import json
import re
import sys
from pathlib import Path

import numpy as np

MAX_UPSCALE = 8  # the smallest image served: 1/8 of the model input's width and height


class Refused(Exception):
    """A request this model answers with an error: the message is what the client reads."""


class TritonPythonModel:
    def initialize(self, args):
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # the project modules copied beside me
        import triton_python_backend_utils as pb_utils
        from PIL import Image

        from stages.detectnet_v2.preprocessing import EVALUATION_RESAMPLE

        self.pb_utils = pb_utils
        parameters = json.loads(args["model_config"])["parameters"]
        self.width = int(parameters["INPUT_WIDTH"]["string_value"])
        self.height = int(parameters["INPUT_HEIGHT"]["string_value"])
        self.max_pixels = int(parameters["MAX_IMAGE_PIXELS"]["string_value"])
        self.max_bytes = int(parameters["MAX_REQUEST_BYTES"]["string_value"])
        self.resample = EVALUATION_RESAMPLE
        # this model's cap, checked on the header, replaces Pillow's (179 megapixels, a warning below that)
        Image.MAX_IMAGE_PIXELS = None

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        pb_utils = self.pb_utils
        try:
            return self._one(request)
        except Refused as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        except Exception as exc:  # noqa: BLE001 - a client gets one line; the server's log gets the rest
            _log_error(pb_utils, f"detectnet_v2_preprocess: {type(exc).__name__}: {exc}")
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"IMAGE could not be preprocessed ({type(exc).__name__}); the server's log says more"))

    def _one(self, request):
        pb_utils = self.pb_utils
        tensor = pb_utils.get_input_tensor_by_name(request, "IMAGE")
        if tensor is None:
            raise Refused("the request has no input IMAGE (one encoded image, PNG, JPEG or BMP, per row)")
        encoded = [bytes(data) for data in tensor.as_numpy().reshape(-1)]
        if not encoded:
            raise Refused("IMAGE holds no image: send one encoded image (PNG, JPEG or BMP) per row")
        total = sum(len(data) for data in encoded)
        if total > self.max_bytes:
            raise Refused(f"IMAGE holds {total} bytes, more than this server takes in one request "
                          f"(triton.max_request_bytes {self.max_bytes})")
        batch = np.empty((len(encoded), 3, self.height, self.width), np.float32)
        sizes = np.empty((len(encoded), 2), np.int32)
        for index, data in enumerate(encoded):
            sizes[index] = self._decode(index, data, batch[index])
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("input_1", batch),
                                                          pb_utils.Tensor("ORIGINAL_SIZE", sizes)])

    def _decode(self, index: int, data: bytes, out: np.ndarray) -> tuple[int, int]:
        from PIL import Image, UnidentifiedImageError

        from stages.detectnet_v2.preprocessing import ImageError, load_image

        name = f"IMAGE[{index}]"
        unreadable = f"{name} is not an image this server can read ({len(data)} bytes)"
        if not data:
            raise Refused(f"{name} is empty (0 bytes): send an encoded image (PNG, JPEG or BMP)")
        try:
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height = image.size
        except UnidentifiedImageError:
            raise Refused(f"{unreadable}: not a format Pillow reads (PNG, JPEG, BMP, ...)") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise Refused(f"{unreadable}: {_plain(exc)}") from None
        if width * height > self.max_pixels:
            raise Refused(f"{name} is {width}x{height}, {width * height} pixels, more than this server decodes "
                          f"(triton.max_image_pixels {self.max_pixels}); it was not decoded")
        if width * MAX_UPSCALE < self.width or height * MAX_UPSCALE < self.height:
            raise Refused(f"{name} is {width}x{height}, smaller than 1/{MAX_UPSCALE} of the model's input "
                          f"{self.width}x{self.height} on a side: too small to find objects in")
        try:
            load_image(io.BytesIO(data), self.width, self.height, self.resample, out)
        except ImageError as exc:
            raise Refused(f"{unreadable}: {_plain(exc.__cause__ or exc)}") from None
        return width, height


def _log_error(pb_utils, message: str) -> None:
    logger = getattr(pb_utils, "Logger", None)  # Triton 23.04 and later
    if logger is not None:
        logger.log_error(message)


def _plain(exc: BaseException) -> str:
    """An exception's message without a Python object's repr or a file path: what a client may read."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", str(exc))
    text = re.sub(r"(?<![\w.])/[^\s'\"]+", "<path>", text)
    return text.removeprefix("cannot read image data: ") or type(exc).__name__
