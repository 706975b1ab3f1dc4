"""The quantization core: INT8 ranges measured on real data without TensorRT, and the deployable ONNX that
carries a precision inside it (formats/deployable_onnx.py states its rules). One module a concern, as NVIDIA
ModelOpt splits its ONNX quantization:

- ranges from data: histograms.py (a tensor's streamed statistics; numpy and numba), thresholds.py (each
  calibration method's amax from them), ranges.py (a batch of tensors reduced on the caller's threads),
  activations.py (every tensor of a model from onnxruntime, into reused buffers, on the caller's Schedule),
  calibrate.py (the entry points: collect_ranges, collect_candidates, collect_histograms);
- the graph: graph_index.py (producers, consumers, constants, fused convolutions, residual inputs, built
  once per graph), deployable.py (what a rewrite made and decided), int8_rewrite.py (explicit_int8: Q/DQ),
  fp16.py (strongly_typed_fp16), lint.py (the rules checked on any ONNX), builder_check.py (the same file
  built by NVIDIA's TensorRT-RTX), export_folder.py (the export folder's deployable ONNX and its log lines).

It imports nothing of the project but the formats, the worker count and the TensorRT library loader: stages
and the open backend call its entry points."""
