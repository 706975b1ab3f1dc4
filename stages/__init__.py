"""The TAO DetectNet_v2 deployment pipeline. At this level, one module per DVC stage, the entry points
`dvc.yaml` runs (`python -m stages.<stage>`), plus `params` (`make params`); below, the library they
use, one sub-package per concern: pipeline (stage machinery), spec (the TAO spec model), formats (file
formats), detectnet_v2 (the network's pre-processing and spec facts), open_backend and tao_backend (who
runs the steps), bundled_sample (the generated sample)."""
