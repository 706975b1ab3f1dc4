"""The sample's TAO experiment spec: DetectNet_v2's training spec layout, with container references
(`/workspace/tao-experiments/...`) like NVIDIA's tutorial specs, so that the pipeline's substitution
runs on every `dvc repro`."""
from __future__ import annotations

from pathlib import Path

SPEC_TEMPLATE = """\
random_seed: 42
dataset_config {{
  data_sources {{
    tfrecords_path: "/workspace/tao-experiments/data/tfrecords/kitti_trainval/*"
    image_directory_path: "/workspace/tao-experiments/data/training"
  }}
  image_extension: "png"
  target_class_mapping {{
    key: "car"
    value: "car"
  }}
  target_class_mapping {{
    key: "cyclist"
    value: "cyclist"
  }}
  target_class_mapping {{
    key: "pedestrian"
    value: "pedestrian"
  }}
  validation_data_source: {{
    tfrecords_path: "/workspace/tao-experiments/data/tfrecords/kitti_val/*"
    image_directory_path: "/workspace/tao-experiments/data/validation"
  }}
}}
augmentation_config {{
  preprocessing {{
    output_image_width: {width}
    output_image_height: {height}
    min_bbox_width: 1.0
    min_bbox_height: 1.0
    output_image_channel: 3
  }}
}}
model_config {{
  # the model that TAO would train from; the deployment steps do not read it
  pretrained_model_file: "/workspace/tao-experiments/detectnet_v2/pretrained_resnet18/resnet18.hdf5"
  num_layers: 18
  use_batch_norm: true
  objective_set {{
    bbox {{
      scale: 35.0
      offset: 0.5
    }}
    cov {{
    }}
  }}
  arch: "resnet"
}}
training_config {{
  batch_size_per_gpu: {batch_size}
  num_epochs: 120
  learning_rate {{
    soft_start_annealing_schedule {{
      min_learning_rate: 5e-07
      max_learning_rate: 5e-05
      soft_start: 0.10000000149
      annealing: 0.699999988079
    }}
  }}
  regularizer {{
    type: L1
    weight: 3.00000002618e-09
  }}
  optimizer {{
    adam {{
      epsilon: 9.99999993923e-09
      beta1: 0.899999976158
      beta2: 0.999000012875
    }}
  }}
  cost_scaling {{
    initial_exponent: 20.0
    increment: 0.005
    decrement: 1.0
  }}
  checkpoint_interval: 10
}}
"""


def write_spec(path: Path, width: int, height: int, batch_size: int) -> None:
    path.write_text(SPEC_TEMPLATE.format(width=width, height=height, batch_size=batch_size))
