"""The open backend: TAO's three deployment steps done for real with open libraries on the CPU, one
module per step (named after its stage, so that each stage depends on exactly the code it runs), and
what only these steps use: auto's choice of calibration (int8_selection, on the quantization core in
stages/quantization/) and the engines convert builds and verifies (engines: onnxruntime; tensorrt_builds:
TensorRT where present)."""
