"""detectnet_v2_postprocess: DetectNet_v2's raw outputs and each image's original size -> its
detections in original-image pixels (BOXES x1 y1 x2 y2, SCORES, CLASS_IDS in the order of labels.txt),
decoded and clustered by the spec's postprocessing_config with the evaluate stage's own code. A request
of several images gets as many rows for each as its image with the most detections; the extra rows have
score 0 and class -1."""
import json
import sys
from pathlib import Path

import numpy as np


class TritonPythonModel:
    def initialize(self, args):
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # the project modules copied beside me
        import triton_python_backend_utils as pb_utils

        from stages.detectnet_v2.postprocessing import Clustering

        self.pb_utils = pb_utils
        folder = Path(args["model_repository"]) / args["model_version"]
        settings = json.loads((folder / "clustering.json").read_text())
        self.classes = settings["classes"]
        self.input_size = tuple(settings["input_size"])
        self.clustering = {name: Clustering(**values) for name, values in settings["clustering"].items()}

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        pb_utils = self.pb_utils
        try:
            return self._one(request)
        except Exception as exc:  # noqa: BLE001 - a client gets one line, never a traceback or a path
            logger = getattr(pb_utils, "Logger", None)
            if logger is not None:
                logger.log_error(f"detectnet_v2_postprocess: {type(exc).__name__}: {exc}")
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"the detections could not be computed ({type(exc).__name__}); the server's log says more"))

    def _one(self, request):
        from stages.detectnet_v2.postprocessing import detect

        pb_utils = self.pb_utils
        cov = pb_utils.get_input_tensor_by_name(request, "output_cov/Sigmoid").as_numpy()
        bbox = pb_utils.get_input_tensor_by_name(request, "output_bbox/BiasAdd").as_numpy()
        sizes = pb_utils.get_input_tensor_by_name(request, "ORIGINAL_SIZE").as_numpy()
        found = []
        for index in range(len(cov)):
            per_class = detect(cov[index], bbox[index], self.classes, self.clustering, self.input_size,
                               tuple(int(v) for v in sizes[index]))
            boxes = np.concatenate([per_class[name].boxes for name in self.classes]).reshape(-1, 4)
            scores = np.concatenate([per_class[name].confidences for name in self.classes])
            ids = np.concatenate([np.full(len(per_class[name].confidences), k, np.int32)
                                  for k, name in enumerate(self.classes)])
            order = np.argsort(-scores, kind="stable")
            found.append((boxes[order], scores[order], ids[order]))
        rows = max((len(scores) for _, scores, _ in found), default=0)
        out_boxes = np.zeros((len(found), rows, 4), np.float32)
        out_scores = np.zeros((len(found), rows), np.float32)
        out_ids = np.full((len(found), rows), -1, np.int32)
        for index, (boxes, scores, ids) in enumerate(found):
            out_boxes[index, :len(scores)], out_scores[index, :len(scores)], out_ids[index, :len(scores)] = \
                boxes, scores, ids
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("BOXES", out_boxes), pb_utils.Tensor("SCORES", out_scores),
            pb_utils.Tensor("CLASS_IDS", out_ids)])
