"""A model that comes with its calibration cache (export.calibration_cache): the cache's names mapped onto
the exported model, and every cache that cannot serve refused before anything runs, naming what is wrong.
The whole route, through DVC, is test_readme.test_the_ngc_cache_example; the TAO backends' is
test_tao_backends.test_a_given_calibration_cache_goes_to_tao_as_it_is_and_no_image_is_read."""
from __future__ import annotations

import sys

import onnx
import pytest

from helpers.commands import run
from helpers.projects import SMALL_SAMPLE, make_project, set_params
from stages import bundled_sample
from tao_shapes import as_tao_export
from stages.formats.calibration_cache import CalibrationCacheError, calibration_tensor_names, map_onto_model
from stages.formats.onnx_model import TAO_INPUT, TAO_OUTPUTS, export_model, tao_renames
from tao_family import TENSORRT_OWN_NAMES

TAO_NAMES = {TAO_OUTPUTS[0]: "output_cov/Sigmoid:0", TAO_OUTPUTS[1]: "output_bbox/BiasAdd:0"}


@pytest.fixture(scope="module")
def tao_model(tmp_path_factory):
    """(TAO 5's export of a small model, ours of it with TAO's names) as ONNX files."""
    folder = tmp_path_factory.mktemp("tao_model")
    bundled_sample.build_model(folder / "plain.onnx", 64, 32, 1, (3, 5, 7, 9), seed=2, batch="N")
    onnx.save(as_tao_export(onnx.load(folder / "plain.onnx"), 12), folder / "tao.onnx")
    export_model(folder / "tao.onnx", folder / "exported.onnx", "input_1:0", TAO_NAMES)
    return folder / "tao.onnx", folder / "exported.onnx"


def ngc_scales(tao: onnx.ModelProto) -> dict[str, float]:
    """A scale for every tensor of TAO's export, under its own names, and for TensorRT's own layers."""
    return {**{name: 0.01 * (i + 1) for i, name in enumerate(calibration_tensor_names(tao))},
            **{name: 0.5 for name in TENSORRT_OWN_NAMES}}


def test_the_cache_of_taos_export_maps_onto_ours_by_exports_renames(tao_model):
    tao, exported = (onnx.load(p) for p in tao_model)
    scales = ngc_scales(tao)
    mapped = map_onto_model("ngc.txt", scales, exported, "model.onnx", tao_renames("input_1:0", TAO_NAMES))
    assert mapped.scales[TAO_INPUT] == scales["input_1:0"]
    assert mapped.scales[TAO_OUTPUTS[0]] == scales["output_cov/Sigmoid:0"]
    assert mapped.scales["conv1/convolution:0"] == scales["conv1/convolution:0"]  # unchanged by export
    assert set(mapped.scales) == set(calibration_tensor_names(exported))
    assert mapped.ignored == list(TENSORRT_OWN_NAMES)
    assert mapped.covered == mapped.convolutions > 0


def test_a_cache_that_scales_no_convolution_input_is_refused_with_the_counts(tao_model):
    tao, exported = (onnx.load(p) for p in tao_model)
    only_outputs = {"output_cov/Sigmoid:0": 0.1, "Reshape__113:0_output": 0.2, "someone/else:0": 0.3}
    with pytest.raises(CalibrationCacheError, match=r"ngc.txt: scales none of the \d+ convolution inputs of "
                                                    r"model.onnx: 1 of its 3 tensor names match a tensor"):
        map_onto_model("ngc.txt", only_outputs, exported, "model.onnx", tao_renames("input_1:0", TAO_NAMES))


# --------------------------------------------------------------------------- refused before anything runs

@pytest.fixture(scope="module")
def project(tmp_path_factory, tao_model):
    """A project with TAO 5's export of a small model in models/ngc/ (model.root) and room for its cache."""
    project = make_project(tmp_path_factory.mktemp("cache_given") / "project", SMALL_SAMPLE + ["export=int8"])
    (project / "models/ngc").mkdir(parents=True)
    (project / "models/ngc/model.onnx").write_bytes(tao_model[0].read_bytes())
    return project


def validate_with_cache(project, text: str, **more):
    (project / "models/ngc/int8.txt").write_text(text)
    set_params(project, **{"model__root": "models/ngc", "model__file": "models/ngc/model.onnx",
                           "model__input_name": "input_1:0", "model__cov_output": "output_cov/Sigmoid:0",
                           "model__bbox_output": "output_bbox/BiasAdd:0", "dataset__classes": ["car"],
                           "export__data_type": "int8", "export__calibration_cache": "models/ngc/int8.txt", **more})
    return run([sys.executable, "-m", "stages.validate", "--params", "params.yaml"], project, check=False)


@pytest.mark.parametrize("text, message", [
    ("TRT-8601-EntropyCalibration2\ninput_1:0: 3c010a14\nconv1/convolution:0 3d0b7086\n",
     "models/ngc/int8.txt:3: expected 'TENSOR_NAME: 8 hex digits', found 'conv1/convolution:0 3d0b7086'"),
    ("input_1:0: 3c010a14\n", "models/ngc/int8.txt:1: expected a header like 'TRT-8601-EntropyCalibration2'"),
    ("TRT-8601-EntropyCalibration2\nblock_9z/Relu:0: 3c010a14\nconv_other/BiasAdd:0: 3d0b7086\n",
     "models/ngc/int8.txt: scales none of the 18 convolution inputs of models/ngc/model.onnx: 0 of its 2 tensor "
     "names match a tensor of the model (its names: 'block_9z/Relu:0', 'conv_other/BiasAdd:0', ...). Is it the "
     "calibration cache of another model?"),
], ids=["a line that does not parse", "no header", "the cache of another model"])
def test_a_cache_that_cannot_serve_stops_the_run_before_any_stage(project, text, message):
    result = validate_with_cache(project, text)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (project / "artifacts").exists()  # nothing ran, nothing written


def test_a_cache_outside_model_root_is_refused(project):
    (project / "models/elsewhere.txt").write_text("TRT-8601-EntropyCalibration2\ninput_1:0: 3c010a14\n")
    result = validate_with_cache(project, "TRT-8601-EntropyCalibration2\n", export__calibration_cache="models/elsewhere.txt")
    assert ("config key export.calibration_cache names models/elsewhere.txt, which is not inside model.root "
            "models/ngc") in result.stderr, result.stderr


def test_a_cache_for_another_precision_is_refused(project):
    result = validate_with_cache(project, "TRT-8601-EntropyCalibration2\ninput_1:0: 3c010a14\n",
                                 export__data_type="fp16")
    assert "config key export.calibration_cache is set, but export.data_type is fp16" in result.stderr, result.stderr


def test_the_cache_of_this_model_passes(project):
    tao = onnx.load(project / "models/ngc/model.onnx")
    lines = [f"{name}: 3c010a14" for name in calibration_tensor_names(tao)]
    result = validate_with_cache(project, "\n".join(["TRT-100300-EntropyCalibration2", *lines]) + "\n")
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- a cache of another model, same names

@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two TAO-shaped models of the same architecture and tensor names, each fitted to its own data, each
    with a cache as NGC ships one (made on other images of its kind): (project, members, caches)."""
    from tao_family import Member, write_member, write_ngc_cache

    project = tmp_path_factory.mktemp("two_models")
    (project / "conf" / "experiment").mkdir(parents=True)
    members = (Member("cars", 12, ("car",), 320, 192, train_images=24, val_images=8, widths=(7, 13, 25, 27),
                      seed=11, calibration_method="minmax"),
               Member("people", 12, ("pedestrian", "cyclist"), 320, 192, train_images=24, val_images=8,
                      widths=(9, 15, 27, 29), seed=3))
    caches = {}
    for member in members:
        write_member(project, member)
        caches[member.name] = project / "models" / member.name / "cache.txt"
        write_ngc_cache(project / "models" / member.name / "model.onnx", member, caches[member.name])
    return project, members, caches


def check(project, member, cache):
    """The export step's check of `cache` against `member`'s model, on member's validation images."""
    from omegaconf import OmegaConf

    from stages.detectnet_v2.spec_facts import SpecFacts
    from stages.formats.calibration_cache import read_cache
    from stages.open_backend.export import _check_cache_on_images

    exported = project / f"{member.name}.onnx"
    model = export_model(project / "models" / member.name / "model.onnx", exported, "input_1:0", TAO_NAMES)
    scales = map_onto_model(cache, read_cache(cache)[1], model, "model.onnx", tao_renames("input_1:0", TAO_NAMES)).scales
    facts = SpecFacts("spec.txt", member.width, member.height, 3, 4, None, (),
                      (str(project / "data" / member.name / "validation" / "image_2"),), False)
    cfg = OmegaConf.create({"export": {"batch_size": 4, "calibration_cache": str(cache)}, "backend": {"workers": None}})
    _check_cache_on_images(cfg, facts, exported, scales, model)


def test_a_models_own_cache_passes_the_check_on_its_images(two_models, caplog):
    project, members, caches = two_models
    caplog.set_level("INFO")
    for member in members:
        check(project, member, caches[member.name])
    assert caplog.text.count("calibration cache against the model on 8 images: it clips at most") == 2


def test_the_cache_of_another_model_with_the_same_names_is_refused_naming_its_worst_tensors(two_models):
    from stages.pipeline.errors import StageError

    project, (cars, people), caches = two_models
    with pytest.raises(StageError, match=r"its ranges clip \d+\.\d% of the values the model's convolution inputs take "
                                         r"on 8 of your images.*another model with the same tensor names"):
        check(project, people, caches[cars.name])
