"""The TAO DetectNet_v2 deployment pipeline. At this level, one module per DVC stage, the entry points
`dvc.yaml` runs (`python -m stages.<stage>`), plus `params` (`make params`); below, the library they
use, one sub-package per concern: pipeline (stage machinery), spec (the TAO spec model), formats (file
formats), compute (how many threads the work runs on), detectnet_v2 (the network's pre-processing,
post-processing, metric and verdict), quantization (INT8 ranges from data, the deployable ONNX and its
checks), tensorrt (NVIDIA's TensorRT libraries and builds), open_backend and
tao_backend (who runs the steps), serving (Triton), bundled_sample (the generated sample)."""

import os as _os
import signal as _signal

# Signals that arrived while a stage run by DVC imported its libraries. Held, not raised: a
# KeyboardInterrupt inside an import, or in a weakref callback one triggers, prints a traceback or is
# swallowed. run_stage raises it once it can put back the outputs DVC deleted (pipeline/restore.py).
HELD_SIGNALS: list = []

if _os.environ.get("DVC_STAGE"):
    for _signum in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(_signum, lambda signum, frame: HELD_SIGNALS.append(signum))
