"""The bundled sample the pipeline runs on without TAO: a KITTI-style dataset (dataset.py), a complete
DetectNet_v2 spec that points at it through container references (spec.py), and a DetectNet_v2 model
(model.py) whose heads are fitted to the training images so that it really detects (fit.py). Generated,
seeded and deterministic, so no binaries live in git. Only the `sample` stage, the tests and the
benchmarks use it."""
from .dataset import CLASSES, KITTI_SIZE, write_dataset
from .fit import fit_model
from .model import build_model
from .spec import write_spec

__all__ = ["CLASSES", "KITTI_SIZE", "build_model", "fit_model", "write_dataset", "write_spec"]
