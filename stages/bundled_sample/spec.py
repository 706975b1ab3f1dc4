"""The sample's TAO experiment spec: DetectNet_v2's training spec layout, with container references
(`/workspace/tao-experiments/...`) like NVIDIA's tutorial specs, so that the pipeline's substitution
runs on every `dvc repro`."""
from __future__ import annotations

from pathlib import Path

from .dataset import CLASSES

# The share of each box, around its centre, that the coverage targets cover (TAO's bbox_rasterizer_config
# cov_radius_x/y, NVIDIA's KITTI values), at least MIN_RADIUS_CELLS cells each way (bbox_min_radius):
# the sample model is fitted to exactly these targets.
COV_RADII = {"car": 0.4, "cyclist": 1.0, "pedestrian": 1.0, "road_sign": 1.0, "bicycle": 1.0, "person": 1.0}
MIN_RADIUS_CELLS = 1.0
# How the sample model's raw outputs are clustered (postprocessing_config). TAO's DBSCAN weighs each box
# by its coverage and needs a coverage mass of dbscan_min_samples (1) around a core box; eps 0.5 joins
# boxes that overlap with IoU > 0.5, as the fitted boxes of one object do.
CLUSTERING = {"coverage_threshold": 0.1, "dbscan_eps": 0.5, "min_height": 4, "confidence_threshold": 0.9}

# Each per-class section of the spec: one block per target class, in CLASSES order (the model's outputs)
CLASS_BLOCKS = {
    "class_mapping": """\
  target_class_mapping {{
    key: "{name}"
    value: "{name}"
  }}
""",
    "clustering": """\
  target_class_config {{
    key: "{name}"
    value {{
      clustering_config {{
        clustering_algorithm: DBSCAN
        coverage_threshold: {coverage_threshold}
        dbscan_eps: {dbscan_eps}
        dbscan_min_samples: 1
        minimum_bounding_box_height: {min_height}
        dbscan_confidence_threshold: {confidence_threshold}
      }}
    }}
  }}
""",
    "overlap": """\
  minimum_detection_ground_truth_overlap {{
    key: "{name}"
    value: 0.5
  }}
""",
    "evaluation_boxes": """\
  evaluation_box_config {{
    key: "{name}"
    value {{
      minimum_height: 0
      maximum_height: 9999
      minimum_width: 0
      maximum_width: 9999
    }}
  }}
""",
    "target_classes": """\
  target_classes {{
    name: "{name}"
    class_weight: 1.0
    coverage_foreground_weight: 0.05
    objectives {{
      name: "cov"
      initial_weight: 1.0
      weight_target: 1.0
    }}
    objectives {{
      name: "bbox"
      initial_weight: 10.0
      weight_target: 10.0
    }}
  }}
""",
    "rasterizer": """\
  target_class_config {{
    key: "{name}"
    value {{
      cov_center_x: 0.5
      cov_center_y: 0.5
      cov_radius_x: {radius}
      cov_radius_y: {radius}
      bbox_min_radius: {min_radius}
    }}
  }}
""",
}

SPEC_TEMPLATE = """\
random_seed: 42
dataset_config {{
  data_sources {{
    tfrecords_path: "/workspace/tao-experiments/data/tfrecords/kitti_trainval/*"
    image_directory_path: "/workspace/tao-experiments/data/training"
  }}
  image_extension: "png"
{class_mapping}
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
postprocessing_config {{
{clustering}
}}
evaluation_config {{
  validation_period_during_training: 10
  first_validation_epoch: 30
{overlap}
{evaluation_boxes}
  average_precision_mode: SAMPLE
}}
cost_function_config {{
{target_classes}
  enable_autoweighting: true
  max_objective_weight: 0.9999
  min_objective_weight: 0.0001
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
bbox_rasterizer_config {{
{rasterizer}
  deadzone_radius: 0.4
}}
"""


def write_spec(path: Path, width: int, height: int, batch_size: int, classes: tuple[str, ...] = CLASSES) -> None:
    sections = {section: "".join(block.format(name=name, radius=COV_RADII[name], min_radius=MIN_RADIUS_CELLS,
                                              **CLUSTERING) for name in classes).rstrip("\n")
                for section, block in CLASS_BLOCKS.items()}
    path.write_text(SPEC_TEMPLATE.format(width=width, height=height, batch_size=batch_size, **sections))
