"""TensorRT 11.4.0's Python API as a stand-in (tests/fake_tensorrt/api.py says what each version has)."""
import importlib.util as _util
from pathlib import Path as _Path

_spec = _util.spec_from_file_location("_fake_tensorrt_api", _Path(__file__).parents[2] / "api.py")
_api = _util.module_from_spec(_spec)
_spec.loader.exec_module(_api)
globals().update(_api.namespace("11.4.0"))
