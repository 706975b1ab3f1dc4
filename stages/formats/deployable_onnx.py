"""The deployable ONNX: the graph TensorRT 10 and 11 (strongly typed), DeepStream and Triton build an engine
from, with its precision inside it. TensorRT 11 removed implicit quantization and weak typing (builder
precision flags, per-tensor dynamic ranges, INT8 calibrators): INT8 comes only from Q/DQ nodes, FP16
only from fp16 tensors. The file depends on no GPU, so a fleet writes it once and each machine compiles it.

- int8 (`model.int8.onnx`): explicit quantization by TensorRT's rules. Symmetric INT8, zero point 0 written
  as int8 (an omitted one reads as uint8); each quantized convolution reads its data and its weights
  through Q/DQ, weights per output channel (axis 0, opset 13+); a residual Add gets Q/DQ on its residual
  input only, so TensorRT fuses the other branch's convolution with the Add; biases stay float; no Q/DQ on
  the network's outputs. Activation scales are the calibration cache's. What is not quantized computes in
  fp16 (ModelOpt's default `high_precision_dtype`, and what TensorRT 8's `--int8 --fp16` built) or fp32.
- fp16 (`model.fp16.onnx`): every tensor fp16 but the inputs and outputs (fp32, as the fp32 model has them).
- either way, a node whose tensors exceed FP16_DATA_MAX on the calibration images stays fp32.

Where it places Q/DQ differently from NVIDIA ModelOpt's ONNX PTQ, and why:
- only convolutions and residual Adds are quantized (ModelOpt also quantizes pooling, Gemm, MatMul and Mul):
  a DetectNet_v2 is convolutions, whose INT8 kernels are the gain, and TensorRT moves Q/DQ across pooling
  and concatenation itself; measured on a real TAO 5 export, the residual Adds' Q/DQ were the one
  difference that changed the outputs;
- convolutions of under 16 channels are quantized too (ModelOpt skips them): TensorRT's implicit INT8,
  which built TAO's engines and which the gate has judged, quantized every convolution the cache scales,
  and a pruned TAO model has many such layers.
Written here rather than by a library: onnxruntime's QDQ quantizer writes int32 bias DequantizeLinear
nodes and Q/DQ between a convolution and its residual Add, which TensorRT's placement rules exclude, and
NVIDIA ModelOpt's ONNX PTQ, which follows those rules, needs torch. The fp16 conversion is onnxruntime's
float16 converter. stages/quantization/ writes these files (int8_rewrite.py, fp16.py) and checks any ONNX
against these rules (lint.py); this module holds the facts of the format they share."""

from __future__ import annotations

from .file_names import DEPLOYABLE_FILES

HIGH_PRECISIONS = ("fp16", "fp32")  # export.high_precision: what an int8 model computes outside INT8
QDQ_PER_CHANNEL_OPSET = 13  # QuantizeLinear/DequantizeLinear take `axis` (per-channel scales) from opset 13
FP16_QDQ_OPSET = 19  # and a float16 scale (DequantizeLinear then gives float16) from opset 19
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def deployable_file(data_type: str) -> str:
    """The deployable ONNX's file name in the export folder, for a precision."""
    if data_type not in DEPLOYABLE_FILES:
        raise ValueError(f"precision {data_type!r} is not one of {', '.join(DEPLOYABLE_FILES)}")
    return DEPLOYABLE_FILES[data_type]
