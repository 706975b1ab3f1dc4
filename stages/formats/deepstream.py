"""DeepStream's nvinfer configuration for a DetectNet_v2 model, plus the clustering of the spec's
postprocessing_config, so that DeepStream's parser clusters DetectNet_v2's grid as the spec says. Two
routes, one file each:

  nvinfer_config.txt           implicit, TAO's --gen_ds_config way: model.onnx, network-mode 1 (INT8) with
                               int8-calib-file, or 2 (FP16): DeepStream up to 9.2 on TensorRT 8.6/10.
  nvinfer_config.explicit.txt  explicit: the deployable ONNX (model.int8.onnx, model.fp16.onnx) with
                               `strongly-typed=1`, which DeepStream 9.2's nvinfer reads (it sets TensorRT's
                               kSTRONGLY_TYPED); network-mode 0, as a strongly typed network takes no
                               precision flag. Read from DeepStream's source; NVIDIA documents no Q/DQ route.

Never the key: DeepStream configs say KEY_PLACEHOLDER instead."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .deployable_onnx import deployable_file
from .onnx_model import TAO_INPUT, TAO_OUTPUTS
from .file_names import CACHE_FILE

KEY_PLACEHOLDER = "YOUR_TAO_KEY"
CONFIG_FILES = {"implicit": "nvinfer_config.txt", "explicit": "nvinfer_config.explicit.txt"}
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}


# DeepStream's cluster-mode for TAO's clustering_algorithm (0 is OpenCV's groupRectangles, 4 none)
CLUSTER_MODES = {"dbscan": 1, "nms": 2, "hybrid": 3}


def clustering_lines(per_class: Sequence[Mapping]) -> list[str]:
    """`cluster-mode` and one [class-attrs-<id>] section per class, from each class's clustering_config
    (TAO's field names: algorithm, coverage_threshold, dbscan_eps, dbscan_min_samples,
    dbscan_confidence_threshold, nms_iou_threshold, nms_confidence_threshold,
    minimum_bounding_box_height). DeepStream has one cluster-mode for all classes: the first class's;
    a class whose algorithm differs is named in a comment, as DeepStream cannot express it."""
    mode = per_class[0]["algorithm"]
    lines = [f"cluster-mode={CLUSTER_MODES[mode]}"]
    differing = [str(i) for i, c in enumerate(per_class) if c["algorithm"] != mode]
    if differing:
        lines.append(f"# classes {', '.join(differing)} cluster differently in the spec; "
                     f"DeepStream uses {mode} for all")
    for class_id, clustering in enumerate(per_class):
        lines += ["", f"[class-attrs-{class_id}]", f"pre-cluster-threshold={clustering['coverage_threshold']:g}"]
        if mode in ("dbscan", "hybrid"):
            lines += [f"eps={clustering['dbscan_eps']:g}", f"minBoxes={int(clustering['dbscan_min_samples'])}",
                      f"dbscan-min-score={clustering['dbscan_confidence_threshold']:g}"]
        if mode in ("nms", "hybrid"):
            lines += [f"nms-iou-threshold={clustering['nms_iou_threshold']:g}",
                      f"post-cluster-threshold={clustering['nms_confidence_threshold']:g}"]
        lines.append(f"detected-min-h={int(clustering['minimum_bounding_box_height'])}")
    return lines


def write_deepstream_config(out: Path, classes: list[str], chw: tuple[int, int, int], data_type: str,
                            clustering: Sequence[Mapping] | None = None,
                            routes: Sequence[str] = ("implicit", "explicit")) -> None:
    """The nvinfer configs of these routes (CONFIG_FILES) and labels.txt (one class a line, in the order of
    the model's outputs) in `out`; with `clustering` (one clustering_config per class, in that order),
    DeepStream's clustering too."""
    common = [
        "[property]",
        "net-scale-factor=0.00392156862745098",
        "offsets=0;0;0",
        f"infer-dims={';'.join(map(str, chw))}",
        f"tlt-model-key={KEY_PLACEHOLDER}",
        "network-type=0",
        f"num-detected-classes={len(classes)}",
        "model-color-format=0",
        "uff-input-order=0",
        f"output-blob-names={';'.join(TAO_OUTPUTS)}",
        f"uff-input-blob-name={TAO_INPUT}",
        "labelfile-path=labels.txt",
    ]
    lines_of = {
        "explicit": [f"onnx-file={deployable_file(data_type)}", "strongly-typed=1", "network-mode=0"],
        "implicit": [f"onnx-file={deployable_file('fp32')}", f"network-mode={NETWORK_MODES[data_type]}"]
        + ([f"int8-calib-file={CACHE_FILE}"] if data_type == "int8" else []),
    }
    for route in routes:
        text = common + lines_of[route] + (clustering_lines(clustering) if clustering else [])
        (out / CONFIG_FILES[route]).write_text("\n".join(text) + "\n")
    if not (out / "labels.txt").exists():  # TAO's export writes its own
        (out / "labels.txt").write_text("\n".join(classes) + "\n")


def add_clustering(config: Path, clustering: Sequence[Mapping] | None) -> None:
    """Append the spec's clustering to an nvinfer_config.txt another tool wrote (TAO's --gen_ds_config),
    unless it has clustering settings of its own."""
    if not clustering or not config.is_file():
        return
    text = config.read_text()
    if "cluster-mode=" in text or "[class-attrs-" in text:
        return
    config.write_text(text.rstrip("\n") + "\n" + "\n".join(clustering_lines(clustering)) + "\n")
