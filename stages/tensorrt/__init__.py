"""TensorRT's Python API and the NVIDIA libraries that offer it: TensorRT itself (on a GPU machine) and
TensorRT-RTX, NVIDIA's builder for RTX GPUs, whose ahead-of-time build runs on any x86-64 Linux machine,
with no GPU. One place says how the two differ (libraries.py); one builds a network from an ONNX file
with either (network_build.py), which convert's TensorRT builds and export's check of every deployable ONNX
with TensorRT-RTX (quantization/builder_check.py) use."""
