"""Bringing your own spec, data and model: one config file, selected with `-S experiment=...`.
The spec is NVIDIA's own tutorial spec, unchanged; the model uses other tensor names than TAO's."""
from __future__ import annotations

import json
import shutil

import pytest

from helpers.commands import run
from helpers.paths import SHARED_SPECS
from helpers.projects import SMALL_SAMPLE, make_project
from stages import bundled_sample
from stages.pipeline.layout import DEEPSTREAM_CONFIG, RESOLVED_SPEC

MINE = """\
# @package _global_
dataset:
  root: mydata
  spec: specs/train.txt
  references:
    /workspace/tao-experiments/data: mydata
    /workspace/tao-experiments/detectnet_v2: mymodels
  classes: [car, cyclist, pedestrian]
model:
  root: mymodels
  file: mymodels/detector.onnx
  input_name: image
  cov_output: coverage
  bbox_output: boxes
spec:
  set:
    training_config:
      batch_size_per_gpu: 4
calibration:
  max_batches: 2
export:
  batch_size: 4      # TAO's spec calibrates batches of batch_size_per_gpu
convert:
  max_batch_size: 4
  verify_images: 4
evaluate:            # NVIDIA's spec validates on a fold of the training data: name a validation set
  image_dir: mydata/training/image_2
  label_dir: mydata/training/label_2
  max_map_drop: null # a model with random heads: nothing to gate
"""


def test_own_spec_data_and_model_through_one_config_file(tmp_path):
    spec = SHARED_SPECS / "detectnet_v2_train_resnet18_kitti.txt"
    if not spec.is_file():
        pytest.skip(f"{spec} is absent: NVIDIA's tutorial specs are not here")
    project = make_project(tmp_path / "project", SMALL_SAMPLE)
    (project / "specs").mkdir()
    shutil.copy(spec, project / "specs/train.txt")
    bundled_sample.write_dataset(project / "mydata", {"training": 8}, seed=3, size=(320, 120))
    (project / "mymodels").mkdir()
    bundled_sample.build_model(project / "mymodels/detector.onnx", 1248, 384, base_width=4, seed=2)
    _rename_tensors(project / "mymodels/detector.onnx", {"input_1": "image", "output_cov/Sigmoid": "coverage",
                                                         "output_bbox/BiasAdd": "boxes"})
    (project / "conf/experiment/mine.yaml").write_text(MINE)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "my data"], project)

    run(["dvc", "exp", "run", "-S", "experiment=mine", "-S", "export=int8"], project)

    resolved = (project / RESOLVED_SPEC).read_text()
    assert 'image_directory_path: "mydata/training"' in resolved
    assert resolved.replace("mydata", "/workspace/tao-experiments/data").replace(
        "mymodels", "/workspace/tao-experiments/detectnet_v2") == spec.read_text()  # only the paths changed
    metrics = json.loads((project / "metrics/convert.json").read_text())
    assert metrics["precision"] == "int8" and metrics["images"] == 4
    assert "infer-dims=3;384;1248" in (project / DEEPSTREAM_CONFIG).read_text()
    evaluation = json.loads((project / "metrics/evaluate.json").read_text())
    assert evaluation["images"] == 8 and list(evaluation["engine"]["AP"]) == ["car", "cyclist", "pedestrian"]


def _rename_tensors(path, renames):
    import onnx
    model = onnx.load(path)
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in [*model.graph.input, *model.graph.output]:
        value.name = renames.get(value.name, value.name)
    onnx.save(model, path)
