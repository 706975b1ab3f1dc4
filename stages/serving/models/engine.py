"""detectnet_v2 on Triton's Python backend: the onnxruntime engine (1/model.onnx beside this file) for a
Triton without its onnxruntime backend, like the one `make setup` installs."""
import sys
from pathlib import Path


class TritonPythonModel:
    def initialize(self, args):
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # the project modules copied beside me
        import triton_python_backend_utils as pb_utils

        from stages.detectnet_v2.inference import OnnxRunner

        self.pb_utils = pb_utils
        self.engine = OnnxRunner(Path(args["model_repository"]) / args["model_version"] / "model.onnx")

    def execute(self, requests):
        pb_utils = self.pb_utils
        responses = []
        for request in requests:
            try:
                batch = pb_utils.get_input_tensor_by_name(request, "input_1").as_numpy()
                cov, bbox = self.engine(batch)
            except Exception as exc:  # noqa: BLE001 - a client gets one line, never a traceback or a path
                logger = getattr(pb_utils, "Logger", None)
                if logger is not None:
                    logger.log_error(f"detectnet_v2: {type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"the engine could not run this request ({type(exc).__name__}); the server's log says more")))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("output_cov/Sigmoid", cov), pb_utils.Tensor("output_bbox/BiasAdd", bbox)]))
        return responses
