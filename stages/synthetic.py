"""The bundled sample: a KITTI-style dataset, a TAO-style spec that points at it through container
references, and a DetectNet_v2-shaped ONNX model. Generated, seeded and deterministic: no binaries
live in git."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw

CLASSES = ("car", "cyclist", "pedestrian")
KITTI_SIZE = (1242, 375)  # width, height of a KITTI image
COV_OUTPUT, BBOX_OUTPUT, INPUT = "output_cov/Sigmoid", "output_bbox/BiasAdd", "input_1"

# The sample spec is written with container references, exactly like NVIDIA's tutorial specs, so
# the pipeline's substitution runs on every `dvc repro`.
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


# --------------------------------------------------------------------------- dataset

def _scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, list[str]]:
    width, height = size
    sky = np.linspace(200, 120, height // 2)[:, None] * np.ones((1, width))
    road = np.linspace(90, 60, height - height // 2)[:, None] * np.ones((1, width))
    base = np.concatenate([sky, road])[..., None] * np.array([0.8, 0.9, 1.0])
    base += rng.normal(0, 12, base.shape)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    labels = []
    horizon = height // 2
    for _ in range(int(rng.integers(2, 7))):
        cls = CLASSES[int(rng.integers(len(CLASSES)))]
        scale = rng.uniform(0.5, 1.6)
        w, h = {"car": (120, 60), "cyclist": (45, 80), "pedestrian": (25, 70)}[cls]
        w, h = int(w * scale), int(h * scale)
        x1 = int(rng.integers(0, width - w))
        y2 = int(rng.integers(horizon + 10, height))
        y1 = max(0, y2 - h)
        colour = tuple(int(c) for c in rng.integers(20, 235, 3))
        if cls == "car":
            draw.rectangle([x1, y1 + h // 3, x1 + w, y2 - h // 6], fill=colour)
            draw.rectangle([x1 + w // 5, y1, x1 + 4 * w // 5, y1 + h // 3], fill=tuple(c // 2 for c in colour))
            for cx in (x1 + w // 5, x1 + 4 * w // 5):
                draw.ellipse([cx - h // 6, y2 - h // 3, cx + h // 6, y2], fill=(15, 15, 15))
        elif cls == "cyclist":
            for cx in (x1 + w // 5, x1 + 4 * w // 5):
                draw.ellipse([cx - w // 5, y2 - 2 * w // 5, cx + w // 5, y2], outline=(10, 10, 10), width=3)
            draw.rectangle([x1 + w // 3, y1 + h // 5, x1 + 2 * w // 3, y2 - w // 4], fill=colour)
            draw.ellipse([x1 + w // 3, y1, x1 + 2 * w // 3, y1 + h // 5], fill=(230, 190, 160))
        else:
            draw.rectangle([x1, y1 + h // 6, x1 + w, y2], fill=colour)
            draw.ellipse([x1, y1, x1 + w, y1 + h // 6], fill=(230, 190, 160))
        labels.append(f"{cls} 0.00 0 0.00 {x1:.2f} {y1:.2f} {x1 + w:.2f} {y2:.2f} "
                      "0.00 0.00 0.00 0.00 0.00 0.00 0.00")
    return image, labels


def write_dataset(root: Path, counts: dict[str, int], seed: int, size: tuple[int, int] = KITTI_SIZE) -> None:
    """KITTI layout: <root>/<split>/image_2/NNNNNN.png and <root>/<split>/label_2/NNNNNN.txt."""
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        images, labels = root / split / "image_2", root / split / "label_2"
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, lines = _scene(rng, size)
            image.save(images / f"{index:06d}.png", compress_level=1)
            (labels / f"{index:06d}.txt").write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- model

class _GraphBuilder:
    """Builds a ResNet-style DetectNet_v2 graph with deterministic He-initialised weights."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.initializers = [], []

    def conv(self, name: str, x: str, cin: int, cout: int, kernel: int, stride: int,
             gain: float = 1.0, bias: float = 0.0, output: str | None = None) -> str:
        std = gain * np.sqrt(2.0 / (cin * kernel * kernel))
        weight = (self.rng.standard_normal((cout, cin, kernel, kernel)) * std).astype(np.float32)
        self.initializers += [numpy_helper.from_array(weight, f"{name}/kernel"),
                              numpy_helper.from_array(np.full(cout, bias, np.float32), f"{name}/bias")]
        out = output or f"{name}/BiasAdd"
        self.nodes.append(helper.make_node("Conv", [x, f"{name}/kernel", f"{name}/bias"], [out], name=name,
                                           kernel_shape=[kernel, kernel], strides=[stride, stride],
                                           pads=[kernel // 2] * 4))
        return out

    def op(self, op_type: str, name: str, inputs: list[str], output: str | None = None) -> str:
        out = output or f"{name}/{op_type}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name))
        return out

    def residual_block(self, name: str, x: str, cin: int, cout: int, stride: int) -> str:
        y = self.op("Relu", f"{name}_relu_1", [self.conv(f"{name}_conv_1", x, cin, cout, 3, stride)])
        y = self.conv(f"{name}_conv_2", y, cout, cout, 3, 1, gain=0.5)  # keep the sum's variance in check
        shortcut = x if stride == 1 and cin == cout else self.conv(f"{name}_conv_shortcut", x, cin, cout, 1, stride)
        return self.op("Relu", f"{name}_relu", [self.op("Add", f"{name}_add", [y, shortcut])])


def build_model(path: Path, width: int, height: int, num_classes: int = len(CLASSES),
                base_width: int = 16, seed: int = 0, batch: int | str = 1) -> None:
    """A DetectNet_v2-shaped model: input_1 (N,3,H,W) -> stride-16 ResNet-style backbone ->
    output_cov/Sigmoid (N,C,H/16,W/16) and output_bbox/BiasAdd (N,4C,H/16,W/16)."""
    if width % 16 or height % 16:
        raise ValueError(f"DetectNet_v2 needs input sizes that are multiples of 16, got {width}x{height}")
    g = _GraphBuilder(seed)
    channels = [base_width, base_width * 2, base_width * 4, base_width * 4]
    x = g.op("Relu", "conv1_relu", [g.conv("conv1", INPUT, 3, channels[0], 7, 2)])
    for stage, (cin, cout) in enumerate(zip(channels, channels[1:]), start=1):
        x = g.residual_block(f"block_{stage}a", x, cin, cout, 2)
        x = g.residual_block(f"block_{stage}b", x, cout, cout, 1)
    logits = g.conv("output_cov", x, channels[-1], num_classes, 1, 1, gain=0.5, bias=-1.0)
    g.op("Sigmoid", "output_cov/Sigmoid", [logits], output=COV_OUTPUT)
    g.conv("output_bbox", x, channels[-1], 4 * num_classes, 1, 1, gain=0.5, output=BBOX_OUTPUT)
    grid = (height // 16, width // 16)
    graph = helper.make_graph(
        g.nodes, "detectnet_v2_sample",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info(COV_OUTPUT, TensorProto.FLOAT, [batch, num_classes, *grid]),
         helper.make_tensor_value_info(BBOX_OUTPUT, TensorProto.FLOAT, [batch, 4 * num_classes, *grid])],
        g.initializers)
    model = helper.make_model(graph, producer_name="detectnet-deploy sample",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
