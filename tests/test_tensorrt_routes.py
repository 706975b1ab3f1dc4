"""convert.engine=tensorrt and trtexec on TensorRT 8.6, 10.x and 11.x, against stand-ins whose names and
flags follow each version's documentation (tests/fake_tensorrt, tests/fake_trtexec.py): the explicit route
(the deployable ONNX, strongly typed) where the version has it, the implicit route (flags, ranges, the
calibration cache) where asked for and possible, and clear errors elsewhere."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from helpers.models import tiny_export
from helpers.paths import ROOT
from fake_trtexec import install
from stages.formats.calibration_cache import read_cache, write_cache
from stages.open_backend.engine_request import EngineRequest
from stages.open_backend.engines import build_engine
from stages.open_backend.tensorrt_builds import route
from stages.pipeline.errors import StageError
from stages.quantization.calibrate import collect_ranges
from stages.quantization.export_folder import write_for_export
from stages.tensorrt.libraries import TensorRTVersion
from stages.tensorrt.versions import abilities, from_trtexec_tag, trtexec_tag

FAKE_TENSORRT = ROOT / "tests" / "fake_tensorrt"
VERSIONS = ("8.6.1", "10.3.0", "11.4.0")
PROFILE = {"input_1": [[1, 3, 48, 96], [2, 3, 48, 96], [4, 3, 48, 96]]}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Export folders as the export stage leaves them, for each precision."""
    root = tiny_export(tmp_path_factory.mktemp("exports"))
    rng = np.random.default_rng(0)
    batches = [np.clip(rng.normal(0.5, 0.2, (4, 3, 48, 96)), 0, 1).astype(np.float32) for _ in range(2)]
    maxima = {}
    amax = collect_ranges(root / "model.onnx", iter(batches), "minmax", maxima=maxima, percentile=None, skip_zeros=True)
    folders = {}
    for data_type in ("fp32", "fp16", "int8"):
        folder = folders[data_type] = root / data_type
        folder.mkdir()
        shutil.copyfile(root / "model.onnx", folder / "model.onnx")
        if data_type == "int8":
            write_cache(folder / "calibration.bin", amax, "entropy", 8601)
        write_for_export(folder, data_type, "fp16", maxima)
    return folders


@pytest.fixture
def tensorrt(request, monkeypatch):
    """The stand-in `tensorrt` module of the version the test is parametrized with."""
    monkeypatch.syspath_prepend(str(FAKE_TENSORRT / request.param))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    import tensorrt as module

    assert module.__version__ == request.param
    yield module
    sys.modules.pop("tensorrt", None)


def with_an_unknown_op(exports, tmp_path):
    """The int8 export, its deployable ONNX holding an op no TensorRT has an importer for."""
    import onnx

    broken = tmp_path / "export"
    shutil.copytree(exports["int8"], broken)
    model = onnx.load(broken / "model.int8.onnx")
    next(n for n in model.graph.node if n.op_type == "Sigmoid").op_type = "NoSuchOp"
    onnx.save(model, broken / "model.int8.onnx")
    return broken


def request_for(exports, tmp_path, data_type, quantization="auto", kind="tensorrt"):
    return EngineRequest(exports[data_type], data_type, tmp_path / "model.engine", max_batch_size=4, workspace_mib=512,
                         kind=kind, quantization=quantization, min_batch_size=1, opt_batch_size=2,
                         timing_cache_dir=tmp_path / "timing")


# --------------------------------------------------------------------------- TensorRT's Python API

@pytest.mark.parametrize("version, auto, refused", [("8.6.1", "implicit", "explicit"), ("9.3.0", "implicit", "explicit"),
                                                     ("10.3.0", "explicit", None), ("11.4.0", "explicit", "implicit"),
                                                     ("12.0.0", "explicit", "implicit")])
def test_each_versions_route_comes_from_the_one_table(version, auto, refused):
    # stages/tensorrt/versions.py: 9 (never a general release) is 8's row, a later major the latest row's
    parsed = TensorRTVersion.parse(version)
    assert route("auto", parsed) == auto
    for quantization in ("explicit", "implicit"):
        if quantization == refused:
            with pytest.raises(StageError, match=f"convert.quantization is {quantization}"):
                route(quantization, parsed)
        else:
            assert route(quantization, parsed) == quantization
    assert abilities(parsed.major).strongly_typed == (auto == "explicit")


@pytest.mark.parametrize("version, tag", [((8, 6, 1), "v8601"), ((10, 3, 0), "v100300"), ((11, 4, 0), "v110400")])
def test_trtexecs_banner_tag_is_read_and_written_by_the_same_table(version, tag):
    # the platform record reads trtexec's version from this tag; the trtexec stand-in prints it
    assert trtexec_tag(*version) == tag and from_trtexec_tag(tag) == version


def test_a_tag_of_no_tensorrt_version_is_not_read_as_one():
    assert [from_trtexec_tag(tag) for tag in ("v12", "vabc", "v1234567", "v0601")] == [None] * 4


@pytest.mark.parametrize("tensorrt", ["10.3.0", "11.4.0"], indirect=True)
@pytest.mark.parametrize("data_type", ["int8", "fp16"])
def test_the_explicit_route_builds_a_strongly_typed_network_from_the_deployable_onnx(tensorrt, exports, tmp_path,
                                                                                     data_type):
    build_engine(request_for(exports, tmp_path, data_type))
    build = tensorrt.BUILDS[-1]
    assert build["strongly_typed"] and build["flags"] == [] and build["dynamic_ranges"] == {}
    assert build["network_flags"] == (0 if tensorrt.__version__.startswith("11") else 1 << 1)
    assert (build["qdq"] > 0) == (data_type == "int8")  # model.int8.onnx: its Q/DQ carry the precision
    assert build["profiles"] == [PROFILE] and build["pools"] == {"WORKSPACE": 512 << 20}
    assert json.loads((tmp_path / "model.engine").read_bytes()) == build


@pytest.mark.parametrize("tensorrt", ["8.6.1", "10.3.0"], indirect=True)
def test_the_implicit_route_sets_tensorrt_8s_flags_and_the_caches_ranges(tensorrt, exports, tmp_path):
    quantization = "auto" if tensorrt.__version__.startswith("8") else "implicit"  # auto is implicit on 8.6
    build_engine(request_for(exports, tmp_path, "int8", quantization))
    build = tensorrt.BUILDS[-1]
    assert build["flags"] == ["INT8"] and not build["strongly_typed"] and build["qdq"] == 0  # model.onnx
    assert build["network_flags"] == 1 << 0  # EXPLICIT_BATCH
    _, scales = read_cache(exports["int8"] / "calibration.bin")
    assert build["dynamic_ranges"] == {name: [-s * 127.0, s * 127.0] for name, s in scales.items()}


@pytest.mark.parametrize("tensorrt", ["10.3.0"], indirect=True)
def test_fp16_on_the_implicit_route_is_the_fp16_flag_on_model_onnx(tensorrt, exports, tmp_path):
    build_engine(request_for(exports, tmp_path, "fp16", "implicit"))
    assert tensorrt.BUILDS[-1]["flags"] == ["FP16"] and tensorrt.BUILDS[-1]["qdq"] == 0


@pytest.mark.parametrize("tensorrt", ["11.4.0"], indirect=True)
def test_the_implicit_route_on_tensorrt_11_is_refused_naming_the_version_and_the_explicit_route(tensorrt, exports,
                                                                                               tmp_path):
    with pytest.raises(StageError, match=r"convert.quantization is implicit, but TensorRT 11.4.0 removed implicit "
                                         r"quantization.*-S convert.quantization=explicit"):
        build_engine(request_for(exports, tmp_path, "int8", "implicit"))
    assert not (tmp_path / "model.engine").exists() and tensorrt.BUILDS == []


@pytest.mark.parametrize("tensorrt", ["8.6.1"], indirect=True)
def test_the_explicit_route_on_tensorrt_8_6_is_refused(tensorrt, exports, tmp_path):
    with pytest.raises(StageError, match="TensorRT 8.6.1 has no strongly typed networks"):
        build_engine(request_for(exports, tmp_path, "int8", "explicit"))


@pytest.mark.parametrize("tensorrt", ["11.4.0"], indirect=True)
def test_the_11_stand_in_lacks_every_name_11_removed(tensorrt, exports):
    """So a weak-typing call fails here as on the real module: the old builder's calls, one by one."""
    for flag in ("FP16", "INT8", "BF16", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                 "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"):
        assert not hasattr(tensorrt.BuilderFlag, flag), flag
    assert not hasattr(tensorrt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert int(tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    config = tensorrt.Builder(tensorrt.Logger()).create_builder_config()
    with pytest.raises(AttributeError):
        config.int8_calibrator = object()
    with pytest.raises(AttributeError):
        tensorrt.ITensor("x").dynamic_range = (-1.0, 1.0)
    assert not hasattr(tensorrt.Builder(tensorrt.Logger()), "platform_has_fast_fp16")


@pytest.mark.parametrize("tensorrt", ["10.3.0"], indirect=True)
def test_a_strongly_typed_network_with_a_precision_flag_fails_to_build_on_10(tensorrt, exports):
    """What the stand-in holds the explicit route to: TensorRT 10 refuses precision flags on it."""
    builder = tensorrt.Builder(tensorrt.Logger())
    network = builder.create_network(1 << int(tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    tensorrt.OnnxParser(network, builder.logger).parse((exports["int8"] / "model.int8.onnx").read_bytes())
    config = builder.create_builder_config()
    config.set_flag(tensorrt.BuilderFlag.INT8)
    assert builder.build_serialized_network(network, config) is None


@pytest.mark.parametrize("tensorrt", ["11.4.0"], indirect=True)
def test_a_model_tensorrt_cannot_parse_is_an_error_with_its_message(tensorrt, exports, tmp_path):
    request = request_for(exports, tmp_path, "int8")
    request.export_dir = with_an_unknown_op(exports, tmp_path)
    with pytest.raises(StageError, match=r"TensorRT 11.4.0 cannot parse .*model.int8.onnx: No importer registered for "
                                         r"op: NoSuchOp"):
        build_engine(request)
    assert not (tmp_path / "model.engine").exists()


@pytest.mark.parametrize("tensorrt", ["11.4.0"], indirect=True)
def test_the_timing_cache_of_one_build_is_read_by_the_next(tensorrt, exports, tmp_path):
    build_engine(request_for(exports, tmp_path, "int8"))
    build_engine(request_for(exports, tmp_path, "int8"))
    assert json.loads((tmp_path / "timing" / "timing-11.4.0.cache").read_text()) == [0, 1]


# --------------------------------------------------------------------------- trtexec

@pytest.fixture
def trtexec(request, tmp_path, monkeypatch):
    """A trtexec of the version the test is parametrized with, first on PATH; its runs recorded."""
    install(tmp_path / "bin", request.param)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_TRTEXEC_RECORD", str(tmp_path / "trtexec.jsonl"))

    def runs():
        lines = (tmp_path / "trtexec.jsonl").read_text().splitlines()
        return [json.loads(line)["argv"] for line in lines if "--help" not in line]
    return runs


def options_of(argv):
    return dict(arg.partition("=")[::2] for arg in argv)


@pytest.mark.parametrize("trtexec", ["11.4.0"], indirect=True)
@pytest.mark.parametrize("data_type", ["int8", "fp16", "fp32"])
def test_trtexec_11_gets_the_deployable_onnx_and_no_precision_flag(trtexec, exports, tmp_path, data_type):
    build_engine(request_for(exports, tmp_path, data_type, kind="trtexec"), tmp_path / "trtexec.log")
    [argv] = trtexec()
    options = options_of(argv)
    assert options["--onnx"].endswith({"int8": "model.int8.onnx", "fp16": "model.fp16.onnx", "fp32": "model.onnx"}[
        data_type])
    assert options["--minShapes"] == "input_1:1x3x48x96" and options["--optShapes"] == "input_1:2x3x48x96"
    assert options["--maxShapes"] == "input_1:4x3x48x96" and options["--memPoolSize"] == "workspace:512M"
    assert options["--timingCacheFile"] == str(tmp_path / "timing" / "timing-11.4.0.cache")
    assert set(options) == {"--onnx", "--saveEngine", "--minShapes", "--optShapes", "--maxShapes", "--memPoolSize",
                            "--timingCacheFile"}
    assert json.loads((tmp_path / "model.engine").read_text())["version"] == "11.4.0"
    assert "&&&& PASSED TensorRT.trtexec [TensorRT v110400]" in (tmp_path / "trtexec.log").read_text()


@pytest.mark.parametrize("trtexec", ["10.3.0"], indirect=True)
@pytest.mark.parametrize("quantization, data_type, flags", [
    ("auto", "int8", ["--stronglyTyped"]),
    ("implicit", "int8", ["--int8", "--calib"]),
    ("implicit", "fp16", ["--fp16"]),
])
def test_trtexec_10_gets_its_routes_flags(trtexec, exports, tmp_path, quantization, data_type, flags):
    build_engine(request_for(exports, tmp_path, data_type, quantization, kind="trtexec"), tmp_path / "trtexec.log")
    options = options_of(trtexec()[0])
    assert [flag for flag in options if flag in ("--stronglyTyped", "--int8", "--calib", "--fp16")] == flags
    if "--calib" in options:
        assert options["--calib"] == str(exports["int8"] / "calibration.bin")
        assert options["--onnx"] == str(exports["int8"] / "model.onnx")


@pytest.mark.parametrize("trtexec", ["8.6.1"], indirect=True)
def test_trtexec_8_6_builds_the_implicit_route_by_default(trtexec, exports, tmp_path):
    build_engine(request_for(exports, tmp_path, "int8", kind="trtexec"), tmp_path / "trtexec.log")
    options = options_of(trtexec()[0])
    assert "--int8" in options and "--stronglyTyped" not in options


@pytest.mark.parametrize("trtexec", ["11.4.0"], indirect=True)
def test_trtexec_11_refuses_a_precision_flag_as_unknown(trtexec, exports, tmp_path):
    """What the stand-in holds the argv to: trtexec 11 stops at a removed flag."""
    import subprocess

    result = subprocess.run(["trtexec", f"--onnx={exports['int8'] / 'model.onnx'}", "--int8"], capture_output=True,
                            text=True)
    assert result.returncode == 1 and "Unknown option: --int8" in result.stdout


@pytest.mark.parametrize("trtexec", ["11.4.0"], indirect=True)
def test_trtexec_with_the_implicit_route_on_11_is_refused_before_it_runs(trtexec, exports, tmp_path):
    with pytest.raises(StageError, match="TensorRT 11.4.0 removed implicit quantization"):
        build_engine(request_for(exports, tmp_path, "int8", "implicit", kind="trtexec"), tmp_path / "trtexec.log")
    assert trtexec() == []


@pytest.mark.parametrize("trtexec", ["11.4.0"], indirect=True)
def test_a_model_trtexec_refuses_fails_with_trtexecs_own_lines(trtexec, exports, tmp_path):
    request = request_for(exports, tmp_path, "int8", kind="trtexec")
    request.export_dir = with_an_unknown_op(exports, tmp_path)
    with pytest.raises(StageError, match=r"(?s)trtexec failed \(exit 1\).*No importer registered for op: NoSuchOp"):
        build_engine(request, tmp_path / "trtexec.log")
    assert not (tmp_path / "model.engine").exists()


def test_no_trtexec_on_path_is_a_clear_error(exports, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(StageError, match="convert.engine is trtexec, but no trtexec is on PATH"):
        build_engine(request_for(exports, tmp_path, "int8", kind="trtexec"), tmp_path / "trtexec.log")
