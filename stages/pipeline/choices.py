"""The values a config key may take, apart from the schema, so the platform probe (run by DVC on every
`dvc repro`) checks them without loading OmegaConf. Where a library defines the values (the formats'
precisions, calibrators and high precisions), they are read from it, never written twice."""

from ..formats.calibration_cache import AUTO, CALIBRATOR_NAMES
from ..formats.deployable_onnx import HIGH_PRECISIONS  # noqa: F401 - export.high_precision, re-exported
from ..formats.file_names import DEPLOYABLE_FILES

DATA_TYPES = tuple(DEPLOYABLE_FILES)  # precisions of export and conversion: fp32, fp16, int8
ENGINE_KINDS = ("onnxruntime", "tensorrt", "trtexec", "tensorrt_rtx")  # convert.engine: what the open backend builds with
# convert.quantization: precision from the deployable ONNX (explicit), or TensorRT 8's flags and the calibration
# cache (implicit); auto: explicit where the TensorRT found has it (10, 11), else implicit (8.6)
QUANTIZATIONS = ("auto", "explicit", "implicit")
GATE_FAILURE_ACTIONS = ("stop", "record")  # evaluate.on_gate_failure
INCONCLUSIVE_ACTIONS = ("fail", "pass")  # evaluate.on_inconclusive: what a verdict the evidence cannot decide does
CALIBRATION_METHODS = (AUTO, *CALIBRATOR_NAMES)  # backend.calibration_method (open backend)
BACKENDS = ("open", "tao", "tao_launcher", "tao_docker")  # backend.name: who runs the four steps
EXPORT_FORMATS = ("onnx",)  # backend.export_format (TAO backends) the pipeline can finish; see validate for etlt
TAO_EXPORT_FORMATS = (None, "etlt", *EXPORT_FORMATS)  # backend.export_format as TAO names it (etlt: TAO 3/4)
CAL_SOURCES = (None, "tensorfile", "image_dir", "training_data")  # export.cal_source: what int8 calibrates on
COMPRESSIONS = (None, "gzip", "lzf")  # calibration.compression: the tensorfile's h5py filter
INPUT_ORDERS = ("nchw", "nhwc", "nc")  # convert.input_order
TRITON_ENGINE_BACKENDS = ("python", "auto")  # triton.engine_backend: how Triton runs the engine
