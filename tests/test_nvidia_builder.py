"""NVIDIA's own builder on this machine: TensorRT-RTX (the real `tensorrt_rtx` module) parses and builds,
ahead of time and with no GPU, what the pipeline writes. The lint's rules meet NVIDIA's parser one by one;
the explicit route's code builds real engines; export records what the builder said and fails on a graph
it refuses; convert.engine=tensorrt_rtx builds an engine for RTX GPUs, which evaluate and triton refuse
clearly where they cannot run it."""
from __future__ import annotations

import json
import os
import re
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers.commands import run
from helpers.models import engine_request, tiny_export, tiny_images
from helpers.paths import ROOT
from stages.quantization.fp16 import strongly_typed_fp16
from stages.quantization.int8_rewrite import explicit_int8
from stages.quantization.lint import lint
from stages.quantization.calibrate import collect_ranges
from stages.pipeline.errors import StageError
from stages.tensorrt import libraries, network_build
from stages.quantization.builder_check import check

RTX = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is in the lock for x86-64 Linux: make setup installs it")
SHAPES = ((1, 3, 48, 96), (2, 3, 48, 96), (4, 3, 48, 96))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("nvidia"))


@pytest.fixture(scope="module")
def scales(exported):
    amax = collect_ranges(exported / "model.onnx", (tiny_images(seed) for seed in range(3)), "minmax", percentile=None, skip_zeros=True)
    return {name: value / 127.0 for name, value in amax.items()}


def int8_model(exported, scales, high_precision="fp32") -> onnx.ModelProto:
    return explicit_int8(onnx.load(exported / "model.onnx"), scales, high_precision).model


def rtx_build(model: onnx.ModelProto, tmp_path) -> network_build.Built:
    path = tmp_path / "graph.onnx"
    onnx.save(model, path)
    return network_build.build(libraries.tensorrt_rtx(), path, SHAPES, 256)


def producers(m):
    return {o: n for n in m.graph.node for o in n.output}


def first(m, op_type):
    return next(n for n in m.graph.node if n.op_type == op_type)


def conv_with_qdq(m):
    """The first convolution whose data and weights both come through DequantizeLinear."""
    made_by = producers(m)
    return next(n for n in m.graph.node if n.op_type == "Conv"
                and all(getattr(made_by.get(i), "op_type", None) == "DequantizeLinear" for i in n.input[:2]))


def add_initializer(m, array, name):
    m.graph.initializer.append(numpy_helper.from_array(array, name))
    return name


# ------------------------------------------------------------------ one graph per rule of the lint, each
# breaking that rule only. NVIDIA's parser refuses some (asserted with its words); it accepts the rest, whose
# rule the lint keeps for the reason its comment cites from TensorRT's documentation (fusion, speed).

def int32_bias_dequantize(m):
    conv = conv_with_qdq(m)
    bias = next(i for i in m.graph.initializer if i.name == conv.input[2])
    values = numpy_helper.to_array(bias)
    add_initializer(m, np.round(values / 1e-4).astype(np.int32), "bias_q")
    add_initializer(m, np.float32(1e-4), "bias_s")
    add_initializer(m, np.int32(0), "bias_z")
    m.graph.node.insert(0, helper.make_node("DequantizeLinear", ["bias_q", "bias_s", "bias_z"], ["bias_dq"],
                                            name="bias_DequantizeLinear"))
    conv.input[2] = "bias_dq"
    return m


def zero_point_omitted(m):
    del first(m, "QuantizeLinear").input[2]
    return m


def with_zero_point(m, zero, name, made_by_a_node=False):
    """The first Q/DQ pair's zero point replaced by `zero` (or by a node's output that holds it)."""
    q = first(m, "QuantizeLinear")
    dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
    add_initializer(m, zero, name)
    if made_by_a_node:
        m.graph.node.insert(0, helper.make_node("Identity", [name], [f"{name}_made"], name=f"{name}_identity"))
        name = f"{name}_made"
    q.input[2] = dq.input[2] = name
    return m


def zero_point_uint8(m):
    return with_zero_point(m, np.uint8(0), "u8_zero")


def zero_point_not_zero(m):
    return with_zero_point(m, np.int8(3), "int8_three")


def zero_point_computed(m):
    return with_zero_point(m, np.int8(0), "zero_in", made_by_a_node=True)


def qdq_on_output(m):
    output = m.graph.output[1].name
    producers(m)[output].output[0] = "raw_output"
    add_initializer(m, np.float32(0.1), "out_s")
    add_initializer(m, np.int8(0), "out_z")
    m.graph.node.extend([helper.make_node("QuantizeLinear", ["raw_output", "out_s", "out_z"], ["out_q"], name="out_q"),
                         helper.make_node("DequantizeLinear", ["out_q", "out_s", "out_z"], [output], name="out_dq")])
    return m


def quantize_without_dequantize(m):
    conv = conv_with_qdq(m)
    dq = producers(m)[conv.input[0]]
    q = producers(m)[dq.input[0]]
    m.graph.node.insert(list(m.graph.node).index(conv), helper.make_node("Cast", [q.output[0]], ["q_as_float"],
                                                                         to=TensorProto.FLOAT, name="q_cast"))
    dq.input[0] = "q_as_float"
    dq.op_type = "Identity"
    del dq.input[1:]
    return m


def cast_between_dequantize_and_conv(m):
    conv = conv_with_qdq(m)
    m.graph.node.insert(list(m.graph.node).index(conv), helper.make_node(
        "Cast", [conv.input[0]], ["dq_cast"], to=TensorProto.FLOAT, name="dq_cast"))
    conv.input[0] = "dq_cast"
    return m


def weights_without_qdq(m):
    conv = conv_with_qdq(m)
    weight_dq = producers(m)[conv.input[1]]
    weights = next(i for i in m.graph.initializer if i.name == weight_dq.input[0])
    scale = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == weight_dq.input[1]))
    values = numpy_helper.to_array(weights).astype(np.float32) * scale.reshape(-1, 1, 1, 1)
    conv.input[1] = add_initializer(m, values.astype(np.float32), "float_weights")
    return m


def weights_along_axis_1(m):
    conv = conv_with_qdq(m)
    weight_dq = producers(m)[conv.input[1]]
    weights = next(i for i in m.graph.initializer if i.name == weight_dq.input[0])
    channels = numpy_helper.to_array(weights).shape[1]
    weight_dq.input[1] = add_initializer(m, np.full(channels, 0.01, np.float32), "axis1_scale")
    weight_dq.input[2] = add_initializer(m, np.zeros(channels, np.int8), "axis1_zero")
    for attribute in weight_dq.attribute:
        if attribute.name == "axis":
            attribute.i = 1
    return m


def qdq_between_conv_and_residual_add(m):
    from stages.quantization.graph_index import residual_inputs

    add_name, residual = next(iter(residual_inputs(m).items()))
    add = next(n for n in m.graph.node if n.name == add_name)
    fused = next(i for i in add.input if i != residual)
    add_initializer(m, np.float32(0.05), "add_s")
    add_initializer(m, np.int8(0), "add_z")
    position = list(m.graph.node).index(add)
    m.graph.node.insert(position, helper.make_node("DequantizeLinear", ["add_q", "add_s", "add_z"], ["add_dq"],
                                                   name="add_dq"))
    m.graph.node.insert(position, helper.make_node("QuantizeLinear", [fused, "add_s", "add_z"], ["add_q"],
                                                   name="add_q"))
    add.input[list(add.input).index(fused)] = "add_dq"
    return m


def float16_network_input(m):
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    entry = m.graph.input[0].name
    for node in m.graph.node:
        node.input[:] = ["input_as_float" if i == entry else i for i in node.input]
    m.graph.node.insert(0, helper.make_node("Cast", [entry], ["input_as_float"], to=TensorProto.FLOAT, name="in_cast"))
    return m


LINT_RULES = {  # rule -> (break it, what the lint says)
    "bias through a DequantizeLinear": (int32_bias_dequantize, "its bias comes through a DequantizeLinear"),
    "no zero point": (zero_point_omitted, "no zero point"),
    "zero point not INT8": (zero_point_uint8, "zero point of type UINT8, not INT8"),
    "zero point not 0": (zero_point_not_zero, "a zero point that is not 0"),
    "zero point not a constant": (zero_point_computed, "its zero point is not a constant"),
    "Q/DQ on an output": (qdq_on_output, "Q/DQ on the network's output"),
    "Q without DQ": (quantize_without_dequantize, "a QuantizeLinear not followed by a DequantizeLinear"),
    "Cast between DQ and Conv": (cast_between_dequantize_and_conv, "a Cast between its DequantizeLinear and it"),
    "Q/DQ on data, not weights": (weights_without_qdq, "Q/DQ on one of its data and weight inputs but not the other"),
    "weights along axis 1": (weights_along_axis_1, "weights quantized along axis 1"),
    "Q/DQ between Conv and residual Add": (qdq_between_conv_and_residual_add,
                                           "Q/DQ between the convolution it fuses with and the Add"),
    "a float16 network input": (float16_network_input, "an input or output that is not float32"),
}


def outcome(model, tmp_path) -> str:
    try:
        rtx_build(model, tmp_path)
    except network_build.ParserRefusal as refused:
        return f"refused: {refused}"
    except StageError as failed:
        return f"failed: {failed}"
    return "built"


# NVIDIA's parser refuses these two (TensorRT-RTX 1.7.1.116), with these words; it accepts the others
REFUSED = {
    "bias through a DequantizeLinear": r"node bias_DequantizeLinear \(DequantizeLinear\): .*input has type Int32 but must "
                                       r"have type FP8, FP4, Int4, Int8, or UInt8",
    "zero point not 0": r"\(QuantizeLinear\): .*Non-zero zero point is not supported",
}


@pytest.mark.parametrize("rule", LINT_RULES)
def test_each_rule_of_the_lint_meets_nvidias_parser(exported, scales, tmp_path, rule):
    breaking, said = LINT_RULES[rule]
    m = breaking(int8_model(exported, scales))
    problems = lint(m, "int8")
    assert problems and any(said in p for p in problems), problems
    got = outcome(m, tmp_path)
    if rule in REFUSED:
        assert re.search(REFUSED[rule], got), got
        assert got.startswith("refused: TensorRT-RTX 1.7.1.116 cannot parse") and "Cuda" not in got
    else:  # the lint's reason is TensorRT's documentation, cited at the rule (quantization/lint.py)
        assert got == "built", got


def test_the_unbroken_graphs_pass_the_lint_and_build(exported, scales, tmp_path):
    for m, data_type in ((int8_model(exported, scales), "int8"), (int8_model(exported, scales, "fp16"), "int8"),
                         (strongly_typed_fp16(onnx.load(exported / "model.onnx")).model, "fp16"),
                         (onnx.load(exported / "model.onnx"), "fp32")):
        assert lint(m, data_type) == []
        built = rtx_build(m, tmp_path)
        assert len(built.plan) > 0 and built.weights_memory > 0


def test_fp16_qdq_scales_are_warned_of_per_convolution(exported, scales, tmp_path):
    m = int8_model(exported, scales, "fp16")
    convolutions = sum(1 for n in m.graph.node if n.op_type == "Conv" and producers(m).get(n.input[1]) is not None
                       and producers(m)[n.input[1]].op_type == "DequantizeLinear")
    assert rtx_build(m, tmp_path).warnings == {"Converting conv activation scales to fp32.": convolutions,
                                                "Converting conv weight scales to fp32.": convolutions}


# ------------------------------------------------------------------ the explicit route on the real module

@pytest.fixture(scope="module")
def deployables(exported, scales):
    """The tiny export with its calibration cache and its deployable int8 and fp16 graphs, as export writes them."""
    from stages.formats.calibration_cache import write_cache
    from stages.quantization.export_folder import write_for_export

    write_cache(exported / "calibration.bin", {name: value * 127.0 for name, value in scales.items()}, "minmax", 8601)
    for data_type in ("int8", "fp16"):
        write_for_export(exported, data_type, "fp16")
    return exported


@pytest.mark.parametrize("data_type", ["int8", "fp16", "fp32"])
def test_the_explicit_route_builds_a_real_engine_with_tensorrt_rtx(deployables, tmp_path, data_type):
    from stages.open_backend.tensorrt_builds import build_with_python_api

    request = engine_request(deployables, data_type, tmp_path / "model.rtx.engine", kind="tensorrt_rtx",
                             max_batch_size=4, opt_batch_size=2, timing_cache_dir=tmp_path / "timing")
    build_with_python_api(request, libraries.tensorrt_rtx())
    assert (tmp_path / "model.rtx.engine").stat().st_size > 100_000
    assert not (tmp_path / "timing").exists()  # its timing cache does nothing: none is kept


def test_tensorrt_rtx_has_no_implicit_route(deployables, tmp_path):
    from stages.open_backend.tensorrt_builds import build_with_python_api

    request = engine_request(deployables, "int8", tmp_path / "e", kind="tensorrt_rtx", quantization="implicit")
    with pytest.raises(StageError, match=r"convert.quantization is implicit, but TensorRT-RTX 1.7.1.116 \(whose API is "
                                         r"TensorRT 11's\) has no implicit quantization"):
        build_with_python_api(request, libraries.tensorrt_rtx())


def test_the_library_facts_name_its_version_and_what_it_runs_on():
    library = libraries.tensorrt_rtx()
    assert str(library) == "TensorRT-RTX 1.7.1.116" == f"TensorRT-RTX {libraries.rtx_version()}"
    assert library.api.major == 11 and not library.timing_cache
    assert not hasattr(library.module, "platform_has_fast_int8") and not hasattr(library.module.BuilderFlag, "INT8")
    assert [libraries.rtx_runs_on(c) for c in ("8.0", "8.6", "8.9", "9.0", "7.5", "12.0", "12.1")] == [
        True, True, True, False, False, True, True]


# ------------------------------------------------------------------ export's check

def test_the_check_records_what_the_builder_said(deployables):
    entry = check(deployables / "model.int8.onnx", (3, 48, 96), 4)
    assert entry["checked"] is True and entry["builder"] == "TensorRT-RTX" and entry["version"] == "1.7.1.116"
    assert entry["graph"] == "model.int8.onnx" and entry["plan_bytes"] > 0 and entry["weights_memory_bytes"] > 0
    assert "seconds" not in str(entry) and set(entry["warnings"]) <= {"Converting conv activation scales to fp32.",
                                                                       "Converting conv weight scales to fp32."}


def test_a_graph_of_one_fixed_batch_and_tf2onnx_names_is_checked_at_its_own_batch(exported, tmp_path):
    """As a TAO tool may write it: batch 1 fixed, the input named input_1:0."""
    m = onnx.load(exported / "model.onnx")
    entry = m.graph.input[0]
    entry.type.tensor_type.shape.dim[0].Clear()
    entry.type.tensor_type.shape.dim[0].dim_value = 1
    for node in m.graph.node:
        node.input[:] = ["input_1:0" if i == entry.name else i for i in node.input]
    entry.name = "input_1:0"
    onnx.save(m, tmp_path / "model.onnx")
    assert check(tmp_path / "model.onnx", (3, 48, 96), 8)["checked"] is True


def test_a_graph_nvidias_parser_refuses_fails_the_check_with_the_node_and_the_reason(exported, scales, tmp_path):
    onnx.save(int32_bias_dequantize(int8_model(exported, scales)), tmp_path / "model.int8.onnx")
    with pytest.raises(network_build.ParserRefusal, match=r"TensorRT-RTX 1.7.1.116 cannot parse .*model.int8.onnx: "
                                                          r"node bias_DequantizeLinear \(DequantizeLinear\): .*input "
                                                          r"has type Int32"):
        check(tmp_path / "model.int8.onnx", (3, 48, 96), 4)


def test_where_tensorrt_rtx_cannot_load_the_check_says_so_once_and_is_skipped(deployables, tmp_path):
    """As on another OS or an older glibc: the import fails; the check is skipped, never faked."""
    stub = tmp_path / "stub" / "tensorrt_rtx"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('libc.so.6: version `GLIBC_2.28` not found')\n")
    code = ("import json, logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr); "
            "from pathlib import Path; from stages.quantization.builder_check import check; "
            f"print(json.dumps(check(Path({str(deployables / 'model.int8.onnx')!r}), (3, 48, 96), 4)))")
    result = run([sys.executable, "-c", code], ROOT, env={"PYTHONPATH": f"{stub.parent}{os.pathsep}{ROOT}"})
    assert json.loads(result.stdout) == {"builder": "TensorRT-RTX", "checked": False, "reason":
                                         "TensorRT-RTX cannot load here: libc.so.6: version `GLIBC_2.28` not found"}
    assert result.stderr.count("is not checked with NVIDIA's builder") == 1


# ------------------------------------------------------------------ convert.engine=tensorrt_rtx, under DVC

@pytest.fixture(scope="module")
def rtx_project(tmp_path_factory):
    """A small int8 project whose convert builds a TensorRT-RTX engine, run by `dvc repro convert`."""
    from helpers.projects import SMALL_SAMPLE, make_project

    project = make_project(tmp_path_factory.mktemp("rtx") / "project",
                           [*SMALL_SAMPLE, "export=int8", "convert.engine=tensorrt_rtx"])
    run(["dvc", "repro", "convert"], project)
    return project


def test_convert_builds_a_tensorrt_rtx_engine_for_the_gpus_its_runtime_accepts(rtx_project):
    from stages.pipeline.layout import CONVERT_REPORT, PLATFORM_FILE, engine_file

    record = json.loads((rtx_project / PLATFORM_FILE).read_text())
    assert record == {"backend": "open", "engine": "tensorrt_rtx", "builder": {"tensorrt_rtx": "1.7.1.116"},
                      "runs_on": "compute capability 8.0, 8.6, 8.9, 12.x"}  # not this machine's GPU: none is probed
    assert (rtx_project / engine_file("open", "tensorrt_rtx")).stat().st_size > 100_000
    report = json.loads((rtx_project / CONVERT_REPORT).read_text())
    assert report["runs_on_compute_capabilities"] == ["8.0", "8.6", "8.9", "12.x"]
    assert report["platform"] == "tensorrt_rtx engine by tensorrt_rtx 1.7.1.116 for GPUs of compute capability 8.0, " \
                                 "8.6, 8.9, 12.x"


def test_evaluate_without_such_a_gpu_names_the_gpus_it_needs_and_keeps_the_engine(rtx_project):
    from stages.pipeline.layout import engine_file

    engine = rtx_project / engine_file("open", "tensorrt_rtx")
    before = engine.read_bytes()
    result = run(["dvc", "repro", "evaluate"], rtx_project, check=False)
    assert result.returncode != 0
    assert re.search(r"convert.engine is tensorrt_rtx: the engine runs on NVIDIA RTX or data-centre GPUs of compute "
                     r"capability 8.0, 8.6, 8.9 or 12.x .*, and this machine has no NVIDIA GPU; .*the engine is kept in "
                     r"engine/model.rtx.engine", result.stderr), result.stderr
    assert engine.read_bytes() == before


def test_evaluate_on_a_gpu_its_runtime_refuses_names_that_gpu(rtx_project, tmp_path):
    """An H100 (9.0): TensorRT-RTX's runtime refuses it ("The engine cannot run on this GPU")."""
    nvidia_smi = tmp_path / "bin" / "nvidia-smi"
    nvidia_smi.parent.mkdir()
    nvidia_smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 9.0'\n")
    nvidia_smi.chmod(0o755)
    result = run([sys.executable, "-m", "stages.evaluate", "--params", "params.yaml"], rtx_project, check=False,
                 env={"PATH": f"{nvidia_smi.parent}{os.pathsep}{os.environ['PATH']}"})
    assert "and this machine has NVIDIA H100 80GB HBM3 (9.0)" in result.stderr, result.stderr


def test_triton_refuses_a_tensorrt_rtx_engine_clearly(rtx_project):
    result = run([sys.executable, "-m", "stages.triton", "--params", "params.yaml"], rtx_project, check=False)
    assert result.returncode == 1
    assert "Triton's TensorRT backend (like DeepStream's nvinfer and trtexec) loads TensorRT plans, not TensorRT-RTX " \
           "engines" in result.stderr


def test_a_tensorrt_rtx_engine_where_the_library_cannot_load_is_a_clear_error_that_changes_nothing(rtx_project, tmp_path):
    from stages.pipeline.layout import engine_file

    stub = tmp_path / "stub" / "tensorrt_rtx"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('libc.so.6: version `GLIBC_2.28` not found')\n")
    engine = rtx_project / engine_file("open", "tensorrt_rtx")
    before = engine.read_bytes()
    result = run([sys.executable, "-m", "stages.convert", "--params", "params.yaml"], rtx_project, check=False,
                 env={"PYTHONPATH": str(stub.parent)})
    assert result.returncode == 1
    assert "convert.engine is tensorrt_rtx, but TensorRT-RTX cannot load here: libc.so.6: version `GLIBC_2.28` not " \
           "found" in result.stderr, result.stderr
    assert engine.read_bytes() == before


if __name__ == "__main__":  # what NVIDIA's parser does with each rule's graph: python tests/test_nvidia_builder.py
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    tiny_export(folder)
    amax = collect_ranges(folder / "model.onnx", (tiny_images(seed) for seed in range(3)), "minmax", percentile=None, skip_zeros=True)
    found = {name: value / 127.0 for name, value in amax.items()}
    for rule, (breaking, said) in LINT_RULES.items():
        m = breaking(int8_model(folder, found))
        print(f"{rule}: lint {'flags' if any(said in p for p in lint(m, 'int8')) else 'MISSES'}; "
              f"{len(lint(m, 'int8'))} problem(s); TensorRT-RTX {outcome(m, folder)[:300]}")
