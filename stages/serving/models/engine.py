"""detectnet_v2 on Triton's Python backend: the onnxruntime engine (1/model.onnx beside this file) for a
Triton without its onnxruntime backend, like the one `make setup` installs."""
from pathlib import Path


class TritonPythonModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        from stages.detectnet_v2.inference import OnnxRunner

        self.pb_utils = pb_utils
        self.engine = OnnxRunner(Path(args["model_repository"]) / args["model_version"] / "model.onnx")

    def execute(self, requests):
        pb_utils = self.pb_utils
        responses = []
        for request in requests:
            batch = pb_utils.get_input_tensor_by_name(request, "input_1").as_numpy()
            cov, bbox = self.engine(batch)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("output_cov/Sigmoid", cov), pb_utils.Tensor("output_bbox/BiasAdd", bbox)]))
        return responses
