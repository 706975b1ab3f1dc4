"""The open backend: TAO's three deployment steps done for real with open libraries on the CPU, one
module per step (named after its stage, so that each stage depends on exactly the code it runs), and
what only these steps use: INT8 calibration without TensorRT (int8_calibration) and the engines it
builds and verifies (engines: onnxruntime, or TensorRT where present)."""
