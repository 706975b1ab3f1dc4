"""detectnet_v2 on Triton's Python backend: the onnxruntime engine (1/model.onnx beside this file) for a
Triton without its onnxruntime backend, like the one `make setup` installs."""
import sys
from pathlib import Path

import numpy as np


class TritonPythonModel:
    def initialize(self, args):
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # the project modules copied beside me
        import triton_python_backend_utils as pb_utils

        from stages.detectnet_v2.inference import OnnxRunner

        self.pb_utils = pb_utils
        # not spinning: the preprocessing's decoders need the cores between runs (spinning cost the engine
        # more CPU an image and the ensemble throughput: bench/README.md, "Measurements behind the code")
        self.engine = OnnxRunner(Path(args["model_repository"]) / args["model_version"] / "model.onnx",
                                 spinning=False)

    def execute(self, requests):
        """The requests Triton batched together run as one batch: onnxruntime does a batch of 8 in far less
        than 8 times a batch of 1. When that fails, each request runs alone and gets its own answer."""
        inputs = [self._input(request) for request in requests]
        try:
            cov, bbox = self.engine(np.concatenate(inputs))
        except Exception:  # noqa: BLE001 - one bad request must not fail the others
            results = [self._run(batch) for batch in inputs]
        else:
            ends = np.cumsum([len(batch) for batch in inputs])
            results = [(cov[end - len(batch):end], bbox[end - len(batch):end]) for batch, end in zip(inputs, ends)]
        return [self._response(result) for result in results]

    def _input(self, request):
        tensor = self.pb_utils.get_input_tensor_by_name(request, "input_1")
        return None if tensor is None else tensor.as_numpy()

    def _run(self, batch):
        """(coverage, regression) of one request, or the one line its client reads."""
        if batch is None:
            return "the request has no input input_1"
        try:
            return tuple(self.engine(batch))
        except Exception as exc:  # noqa: BLE001 - a client gets one line, never a traceback or a path
            logger = getattr(self.pb_utils, "Logger", None)
            if logger is not None:
                logger.log_error(f"detectnet_v2: {type(exc).__name__}: {exc}")
            return f"the engine could not run this request ({type(exc).__name__}); the server's log says more"

    def _response(self, result):
        pb_utils = self.pb_utils
        if isinstance(result, str):
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(result))
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("output_cov/Sigmoid", result[0]),
                                                          pb_utils.Tensor("output_bbox/BiasAdd", result[1])])
