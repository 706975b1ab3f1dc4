"""The names the formats' files take in a folder, apart from the code that reads them, so the artifact
layout (stages/pipeline/layout.py) names them without loading numpy or onnx: the platform probe, which
DVC runs on every `dvc repro`, reads the layout too."""

CACHE_FILE = "calibration.bin"  # the cache's name beside the exported model, as TAO's export and DeepStream name it
DEPLOYABLE_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
