"""How much of the machine the stages' own work uses: the one count of threads for image decoding,
calibration statistics, evaluation's post-processing and onnxruntime (workers.py). Builds on nothing."""
