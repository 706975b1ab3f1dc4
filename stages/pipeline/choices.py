"""The values a config key may take, apart from the schema, so the platform probe (run by DVC on every
`dvc repro`) checks them without loading OmegaConf."""

DATA_TYPES = ("fp32", "fp16", "int8")  # precisions of export and conversion
ENGINE_KINDS = ("onnxruntime", "tensorrt", "trtexec", "tensorrt_rtx")  # convert.engine: what the open backend builds with
# convert.quantization: precision from the deployable ONNX (explicit), or TensorRT 8's flags and the calibration
# cache (implicit); auto: explicit where the TensorRT found has it (10, 11), else implicit (8.6)
QUANTIZATIONS = ("auto", "explicit", "implicit")
HIGH_PRECISIONS = ("fp16", "fp32")  # export.high_precision: what an int8 model computes outside INT8
GATE_FAILURE_ACTIONS = ("stop", "record")  # evaluate.on_gate_failure
INCONCLUSIVE_ACTIONS = ("fail", "pass")  # evaluate.on_inconclusive: what a verdict the evidence cannot decide does
CALIBRATION_METHODS = ("auto", "entropy", "minmax", "percentile")  # backend.calibration_method (open backend)
BACKENDS = ("open", "tao", "tao_launcher", "tao_docker")  # backend.name: who runs the four steps
EXPORT_FORMATS = ("onnx",)  # backend.export_format (TAO backends); see validate for TAO 3/4's etlt
TRITON_ENGINE_BACKENDS = ("python", "auto")  # triton.engine_backend: how Triton runs the engine
