"""detectnet_v2_preprocess: encoded images (TYPE_STRING) -> the model input as TAO's inference and the
evaluate stage preprocess it (RGB, resized with LANCZOS to the input size, scaled to [0, 1], CHW), and
each image's original (width, height)."""
import io
import json

import numpy as np


class TritonPythonModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        from stages.detectnet_v2.preprocessing import EVALUATION_RESAMPLE

        self.pb_utils = pb_utils
        parameters = json.loads(args["model_config"])["parameters"]
        self.width = int(parameters["INPUT_WIDTH"]["string_value"])
        self.height = int(parameters["INPUT_HEIGHT"]["string_value"])
        self.resample = EVALUATION_RESAMPLE

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        from stages.detectnet_v2.preprocessing import ImageError, image_size, load_image

        pb_utils = self.pb_utils
        encoded = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
        batch = np.empty((len(encoded), 3, self.height, self.width), np.float32)
        sizes = np.empty((len(encoded), 2), np.int32)
        for index, data in enumerate(encoded):
            try:
                sizes[index] = image_size(io.BytesIO(bytes(data)))
                load_image(io.BytesIO(bytes(data)), self.width, self.height, self.resample, batch[index])
            except (ImageError, OSError, ValueError, SyntaxError) as exc:
                message = f"IMAGE[{index}] is not an image this server can read ({len(data)} bytes): {exc}"
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("input_1", batch),
                                                          pb_utils.Tensor("ORIGINAL_SIZE", sizes)])
