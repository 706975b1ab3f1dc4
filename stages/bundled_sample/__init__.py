"""The bundled sample the pipeline runs on without TAO: a KITTI-style dataset, a TAO-style spec that
points at it through container references, and a DetectNet_v2-shaped ONNX model. Generated, seeded and
deterministic, so no binaries live in git. Only the `sample` stage, the tests and the benchmarks use it."""
from .dataset import CLASSES, KITTI_SIZE, write_dataset
from .model import build_model
from .spec import write_spec

__all__ = ["CLASSES", "KITTI_SIZE", "build_model", "write_dataset", "write_spec"]
