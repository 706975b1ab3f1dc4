"""TAO Deploy's own DetectNet_v2 evaluation, run on an ONNX model: its post-processing (`BboxHandler`:
grid decoding, clustering from the spec's postprocessing_config) and its `KITTIMetric`, wired as TAO
Deploy's `detectnet_v2 evaluate` script wires them (outputs transposed to (N, C, W, H), LANCZOS resize,
ground truth in original-image pixels). The tests' oracle; the product never imports TAO's code."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def tao_modules():
    for module in ("sklearn", "matplotlib", "six"):
        pytest.importorskip(module, reason=f"{module} (what TAO Deploy's post-processing imports) is not installed")
    experiment = pytest.importorskip("nvidia_tao_deploy.cv.detectnet_v2.proto.experiment_pb2",
                                     reason="nvidia-tao-deploy is not installed (make setup installs it)")
    from nvidia_tao_deploy.cv.detectnet_v2.postprocessor import BboxHandler
    from nvidia_tao_deploy.cv.detectnet_v2.proto.postprocessing_config import build_postprocessing_config
    from nvidia_tao_deploy.metrics.kitti_metric import KITTIMetric
    logging.getLogger("nvidia_tao_deploy").setLevel(logging.WARNING)
    return experiment.Experiment, BboxHandler, build_postprocessing_config, KITTIMetric


def tao_raw_outputs(session, image: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    with Image.open(image) as opened:
        size = opened.size
        pixels = np.asarray(opened.convert("RGB").resize((width, height), Image.LANCZOS), np.float32)
    batch = (pixels.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    cov, bbox = session.run(["output_cov/Sigmoid", "output_bbox/BiasAdd"], {"input_1": batch})
    return cov, bbox, size


def tao_evaluate(model: Path, image_dir: Path, label_dir: Path, spec_text: str) -> dict[str, float]:
    """{class: AP} as TAO Deploy's evaluate computes it for this model on these images."""
    import onnxruntime as ort
    from google.protobuf import text_format

    Experiment, BboxHandler, build_postprocessing_config, KITTIMetric = tao_modules()
    spec = text_format.Merge(spec_text, Experiment())
    classes = [c.name for c in spec.cost_function_config.target_classes]
    mapping = {k.lower(): v.lower() for k, v in spec.dataset_config.target_class_mapping.items()}
    width = spec.augmentation_config.preprocessing.output_image_width
    height = spec.augmentation_config.preprocessing.output_image_height
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    handler = BboxHandler(batch_size=1, frame_height=height, frame_width=width, target_classes=classes,
                          postproc_classes=classes,
                          classwise_cluster_params=build_postprocessing_config(spec.postprocessing_config))
    ids = {name: i + 1 for i, name in enumerate(classes)}
    truth, predictions = [], []
    for image in sorted(image_dir.iterdir()):
        cov, bbox, size = tao_raw_outputs(session, image, width, height)
        cov, bbox = cov.transpose(0, 1, 3, 2), bbox.transpose(0, 1, 3, 2)
        raw = {name: {"cov": cov[:, i], "bbox": bbox[:, 4 * i:4 * i + 4].copy()} for i, name in enumerate(classes)}
        detections = handler.cluster_detections(handler.bbox_preprocessing(raw))
        predictions += handler.postprocess(detections, 1, [size], (width, height), ids)
        rows = [[ids[mapping[f[0].lower()]], 1 if int(f[2]) != 0 else 0, *map(float, f[4:8])]  # occluded: difficult
                for f in map(str.split, (label_dir / f"{image.stem}.txt").read_text().splitlines())
                if f and f[0].lower() in mapping]
        truth.append(np.array(rows, dtype=float).reshape(-1, 6))
    _, ap = KITTIMetric(n_classes=len(classes) + 1)(truth, predictions, verbose=False)
    return {name: float(ap[i + 1]) for i, name in enumerate(classes)}
