"""backend.calibration_method=auto: every method's ranges from one pass, each candidate's deployable INT8
model scored by mAP on labelled training images the validation set never sees, the best kept, and the
convolutions INT8 costs most left in higher precision until the selection drop is within the gate."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from stages import bundled_sample
from tao_shapes import as_tao_export
from stages.detectnet_v2.evaluation import evaluation_setup
from stages.detectnet_v2.preprocessing import iter_batches, list_images
from stages.detectnet_v2.spec_facts import SpecFacts
from stages.quantization.graph_index import fused_outputs
from stages.quantization.int8_rewrite import explicit_int8
from stages.quantization.lint import lint
from stages.formats.onnx_model import export_model
from stages.open_backend import int8_selection
from stages.quantization.calibrate import collect_candidates
from stages.pipeline.config import load
from stages.pipeline.errors import ConfigError
from stages.pipeline.errors import StageError
from stages.spec import Spec

WIDTH, HEIGHT = 160, 64
PERCENTILE = load([]).backend.percentile  # conf/'s
OUTLIER_LAYER = "block_3b_conv_2"


@pytest.fixture(scope="module")
def outlier(tmp_path_factory):
    """The fitted sample model made so that one convolution cannot be quantized without losing the gate: the
    8 input channels of block_3b_conv_2 that matter most are 1000x larger (its weights for them 1000x
    smaller: the same function in float). Whatever range a method gives that tensor, INT8 loses either them
    or the other 24 channels, and INT8 weights lose the tiny ones."""
    folder = tmp_path_factory.mktemp("outlier")
    bundled_sample.write_dataset(folder, {"training": 48, "validation": 8}, 7, (320, 120))
    bundled_sample.write_spec(folder / "spec.txt", WIDTH, HEIGHT, 8)
    bundled_sample.fit_model(folder / "fitted.onnx", folder / "training", bundled_sample.CLASSES, WIDTH, HEIGHT, 8)
    model = onnx.load(folder / "fitted.onnx")
    weights = {i.name: i for i in model.graph.initializer}

    def scaled(name, factor, index):
        values = numpy_helper.to_array(weights[name]).copy()
        values[index] *= factor
        weights[name].CopyFrom(numpy_helper.from_array(values, name))
    second = numpy_helper.to_array(weights[f"{OUTLIER_LAYER}/kernel"])
    channels = np.argsort(-np.abs(second).sum(axis=(0, 2, 3)))[:8]
    scaled("block_3b_conv_1/kernel", 1000.0, channels)
    scaled("block_3b_conv_1/bias", 1000.0, channels)
    scaled(f"{OUTLIER_LAYER}/kernel", 1e-3, (slice(None), channels))
    onnx.save(model, folder / "outlier.onnx")
    export_model(folder / "outlier.onnx", folder / "model.onnx")
    facts = SpecFacts("spec.txt", WIDTH, HEIGHT, 3, 8, None, (str(folder / "training/image_2"),),
                      (str(folder / "validation/image_2"),), False)
    maxima = {}
    candidates = collect_candidates(folder / "model.onnx",
                                    iter_batches(list_images(folder / "training/image_2"), 8, WIDTH, HEIGHT),
                                    percentile=PERCENTILE, maxima=maxima, skip_zeros=True)
    return folder, facts, candidates, maxima


def choose(outlier, max_drop=0.02, max_float_layers=4):
    folder, facts, candidates, maxima = outlier
    samples = int8_selection.selection_samples(facts, 24)
    setup = evaluation_setup(Spec.load(folder / "spec.txt"), WIDTH, HEIGHT)
    return int8_selection.choose(folder / "model.onnx", candidates, samples, setup, 8, "fp16", maxima, max_drop,
                                 max_float_layers)


def test_every_method_fails_the_outlier_layer_and_fallback_leaves_exactly_it_in_float(outlier):
    selection = choose(outlier)
    scores = selection.selection_mAP
    assert all(scores["fp32"] - scores[method] > 0.3 for method in ("entropy", "minmax", "percentile")), scores
    assert selection.float_layers == [OUTLIER_LAYER]
    assert selection.within_gate and selection.drop <= 0.02


def test_no_fallback_within_a_bound_of_zero_layers_says_how_far_it_is(outlier, caplog):
    selection = choose(outlier, max_float_layers=0)
    assert selection.float_layers == [] and selection.within_gate is False and selection.drop > 0.3


def test_a_float_layer_has_no_qdq_and_the_model_stays_lint_clean(outlier):
    folder, _, candidates, maxima = outlier
    scales = {name: value / 127.0 for name, value in candidates["minmax"].items() if value > 0}
    deployable = explicit_int8(onnx.load(folder / "model.onnx"), scales, "fp16", maxima, [OUTLIER_LAYER])
    assert deployable.float_layers == [OUTLIER_LAYER] and OUTLIER_LAYER not in deployable.quantized
    assert lint(deployable.model, "int8") == []  # the fp32-kept nodes read their DequantizeLinear directly


def test_the_cache_leaves_out_the_tensors_of_a_layer_and_what_tensorrt_fuses_after_it(tmp_path):
    """For the implicit route and TAO's tools: TensorRT runs a layer without a scale on a tensor it produces
    or consumes outside INT8."""
    bundled_sample.build_model(tmp_path / "plain.onnx", 96, 48, base_width=8, seed=1)
    tao = as_tao_export(onnx.load(tmp_path / "plain.onnx"), 12)
    conv = next(n for n in tao.graph.node if n.op_type == "Conv")
    chain = fused_outputs(tao, conv.name)
    made_by = {o: n.op_type for n in tao.graph.node for o in n.output}
    assert [made_by[t] for t in chain] == ["Conv", "Mul", "Add", "Relu"]  # batch norm as tf2onnx writes it


def test_the_selection_set_never_shares_an_image_with_the_validation_set(outlier):
    folder, facts, _, _ = outlier
    both = SpecFacts(facts.source, WIDTH, HEIGHT, 3, 8, None, (*facts.training_dirs, *facts.validation_dirs),
                     facts.validation_dirs, False)
    samples = int8_selection.selection_samples(both, 48)
    validation = set(list_images(folder / "validation/image_2"))
    assert len(samples) == 48 and not validation & {s.image for s in samples}
    assert samples == int8_selection.selection_samples(both, 48)  # the same ones every run


def test_a_selection_larger_than_the_training_images_uses_them_all_with_a_warning(outlier, caplog):
    samples = int8_selection.selection_samples(outlier[1], 49)
    assert len(samples) == 48 == len(set(samples))
    assert "calibration.selection_images is 49, but the spec's training images hold 48 (outside the validation " \
           "set): auto selects on all 48" in caplog.text


def test_a_class_the_selection_labels_never_name_stops_auto_naming_it(outlier):
    folder, facts, _, _ = outlier
    setup = evaluation_setup(Spec.load(folder / "spec.txt"), WIDTH, HEIGHT)
    renamed = type(setup)(["car", "cyclist", "truck"], {"car": "car", "cyclist": "cyclist", "truck": "truck"},
                          {**setup.clustering, "truck": setup.clustering["pedestrian"]}, setup.metric, WIDTH, HEIGHT)
    with pytest.raises(StageError, match=r"the spec trains truck, but the 24 selection images' labels in "
                                         r".*training/label_2 hold no object of it \(they hold: .*pedestrian \d+"):
        int8_selection.selection_samples(facts, 24, renamed)


def test_training_images_without_labels_say_what_auto_needs(outlier, tmp_path):
    import shutil

    shutil.copytree(outlier[0] / "training/image_2", tmp_path / "training/image_2")
    facts = SpecFacts("spec.txt", WIDTH, HEIGHT, 3, 8, None, (str(tmp_path / "training/image_2"),), (), False)
    with pytest.raises(StageError, match=r"measures each calibration's mAP on labelled training images.*"
                                         r"-S backend.calibration_method=entropy"):
        int8_selection.selection_samples(facts, 4)


@pytest.mark.parametrize("override, message", [
    ("calibration.selection_images=0", "calibration.selection_images must be a positive integer"),
    ("export.max_float_layers=-1", "export.max_float_layers must be 0 or more"),
    ("backend.calibration_method=kl", "backend.calibration_method is 'kl'; expected one of auto, entropy"),
])
def test_bad_selection_parameters_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load([override])


def test_the_cache_export_writes_lacks_exactly_the_tensors_of_the_float_layers(outlier, tmp_path):
    """For the implicit route and TAO's tools, which read only the cache."""
    from omegaconf import OmegaConf

    from stages.formats.calibration_cache import read_cache
    from stages.open_backend.export import _calibrate

    folder, facts, candidates, _ = outlier
    cfg = OmegaConf.create({
        "backend": {"calibration_method": "auto", "percentile": 99.99, "skip_zeros": True, "trt_version": 8601,
                    "workers": None},
        "export": {"cal_source": "training_data", "batches": 6, "batch_size": 8, "high_precision": "fp16",
                   "max_float_layers": 4},
        "calibration": {"selection_images": 24}, "evaluate": {"max_map_drop": 0.02}})
    outcome = _calibrate(cfg, facts, folder / "spec.txt", folder / "model.onnx", tmp_path / "none.tensor", tmp_path)
    assert outcome.float_layers == [OUTLIER_LAYER] and outcome.calibration["chosen"] in candidates
    _, written = read_cache(tmp_path / "calibration.bin")
    float_tensors = set(fused_outputs(onnx.load(folder / "model.onnx"), OUTLIER_LAYER))
    assert float_tensors and set(candidates[outcome.calibration["chosen"]]) - set(written) == float_tensors


@pytest.fixture(scope="module")
def lpd_sized(tmp_path_factory):
    """A TAO 5-shaped, 1-class model at 640x480 (tf2onnx's names, opset 12), fitted to its own data, with
    LPDNet's counts: 24 training and 16 validation images; every method's ranges from the 24 training images."""
    import dataclasses

    import tao_family
    from tao_shapes import TAO_INPUT_NAME, TAO_OUTPUT_NAMES
    from stages.formats.onnx_model import TAO_OUTPUTS

    member = dataclasses.replace(tao_family.TAO5, name="lpd", train_images=24, val_images=16)
    project = tmp_path_factory.mktemp("lpd")
    (project / "conf" / "experiment").mkdir(parents=True)
    tao_family.write_member(project, member)
    data, width, height = project / "data/lpd", member.width, member.height
    exported = project / "exported.onnx"
    export_model(project / "models/lpd/model.onnx", exported, TAO_INPUT_NAME,
                 {TAO_OUTPUTS[0]: TAO_OUTPUT_NAMES[0], TAO_OUTPUTS[1]: TAO_OUTPUT_NAMES[1]})
    facts = SpecFacts("spec.txt", width, height, 3, 4, None, (str(data / "training/image_2"),),
                      (str(data / "validation/image_2"),), False)
    setup = evaluation_setup(Spec.load(data / "spec.txt"), width, height)
    maxima = {}
    candidates = collect_candidates(exported, iter_batches(list_images(data / "training/image_2"), 4, width, height),
                                    percentile=PERCENTILE, maxima=maxima, skip_zeros=True)
    return exported, facts, setup, candidates, maxima


def test_a_method_that_ties_fp32_on_the_labels_but_changes_what_it_detects_is_not_chosen(lpd_sized):
    """On 24 labelled images entropy scores at least fp32's own selection mAP (a few boxes' luck: mAP alone
    would keep it), while its boxes agree with fp32's less than another method's do."""
    exported, facts, setup, candidates, maxima = lpd_sized
    samples = int8_selection.selection_samples(facts, 32, setup)  # the default asks for more than there are
    selection = int8_selection.choose(exported, candidates, samples, setup, 4, "fp16", maxima, 0.02, 4,
                                      images_available=24)
    scores, agreements = selection.selection_mAP, selection.selection_agreement
    assert selection.images == 24 == selection.images_available
    by_map = max(("entropy", "minmax", "percentile"), key=lambda m: scores[m])
    assert by_map == "entropy" and scores["entropy"] >= scores["fp32"], scores  # the premise: it ties or beats fp32
    assert agreements["entropy"] < max(agreements.values()) - 0.01, agreements  # ... but disagrees more
    assert selection.chosen != "entropy"

    def merit(method):  # the agreement, less the mAP lost on the labels
        return agreements[method] - max(0.0, scores["fp32"] - scores[method])
    assert selection.chosen == max(("minmax", "percentile"), key=merit)
