"""DeepStream's nvinfer configuration for a DetectNet_v2 model, as TAO export's --gen_ds_config
writes it. Never the key: DeepStream configs say KEY_PLACEHOLDER instead."""
from __future__ import annotations

from pathlib import Path

from .onnx_model import TAO_INPUT, TAO_OUTPUTS

KEY_PLACEHOLDER = "YOUR_TAO_KEY"


def write_deepstream_config(out: Path, classes: list[str], chw: tuple[int, int, int], data_type: str) -> None:
    """nvinfer_config.txt and labels.txt (one class a line, in the order of the model's outputs) in `out`."""
    lines = [
        "[property]",
        "net-scale-factor=0.00392156862745098",
        "offsets=0;0;0",
        f"infer-dims={';'.join(map(str, chw))}",
        f"tlt-model-key={KEY_PLACEHOLDER}",
        "network-type=0",
        f"num-detected-classes={len(classes)}",
        "model-color-format=0",
        "uff-input-order=0",
        f"output-blob-names={';'.join(TAO_OUTPUTS)}",
        f"uff-input-blob-name={TAO_INPUT}",
        "onnx-file=model.onnx",
        "labelfile-path=labels.txt",
        f"network-mode={ {'fp32': 0, 'int8': 1, 'fp16': 2}[data_type] }",
    ]
    if data_type == "int8":
        lines.append("int8-calib-file=calibration.bin")
    (out / "nvinfer_config.txt").write_text("\n".join(lines) + "\n")
    (out / "labels.txt").write_text("\n".join(classes) + "\n")
