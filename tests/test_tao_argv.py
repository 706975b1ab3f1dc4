"""Each TAO command line as docs/design.md, "TAO's command lines", documents it, from representative configs."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from stages.pipeline.commands import Secret, masked, render
from stages.tao_backend import argv as A
from stages.tao_backend.argv import ArgvError

KEY = Secret("s3cr3t-key")


def export_cfg(**over):
    base = dict(data_type="fp32", cal_source=None, cal_image_dir=None, batches=10, batch_size=8,
                max_batch_size=None, max_workspace_size=None, strict_type_constraints=False, force_ptq=False,
                gen_ds_config=False, verbose=False)
    return OmegaConf.create({**base, **over})


def convert_cfg(**over):
    base = dict(max_batch_size=16, opt_batch_size=8, min_batch_size=1, workspace_mib=1024, input_order="nchw",
                strict_type_constraints=False, dla_core=None)
    return OmegaConf.create({**base, **over})


def test_calibration_tensorfile_minimal():
    assert A.calibration_tensorfile("/s/spec.txt", "/o/cal.tensor", 10, False) == [
        "detectnet_v2", "calibration_tensorfile", "-e", "/s/spec.txt", "-o", "/o/cal.tensor", "-m", "10"]


def test_calibration_tensorfile_with_validation_set():
    assert A.calibration_tensorfile("s", "o", 3, True)[-1] == "--use_validation_set"


def test_export_fp32_leaves_unset_flags_out():
    assert render(A.export("m.hdf5", KEY, "out.onnx", export_cfg())) == [
        "detectnet_v2", "export", "-m", "m.hdf5", "-k", "s3cr3t-key", "-o", "out.onnx", "--data_type", "fp32"]


def test_export_int8_with_every_optional_flag():
    cfg = export_cfg(data_type="int8", cal_source="tensorfile", max_batch_size=16, max_workspace_size=1 << 30,
                     strict_type_constraints=True, force_ptq=True, gen_ds_config=True, verbose=True)
    got = render(A.export("m.hdf5", KEY, "o.onnx", cfg, spec="spec.txt", cal_data_file="cal.tensor",
                          cal_image_dir="imgs", cal_cache_file="cal.bin", engine_file="e.engine"))
    assert got == ["detectnet_v2", "export", "-m", "m.hdf5", "-k", "s3cr3t-key", "-o", "o.onnx",
                   "--data_type", "int8", "--cal_data_file", "cal.tensor", "--cal_image_dir", "imgs",
                   "--cal_cache_file", "cal.bin", "--batches", "10", "--batch_size", "8",
                   "--max_batch_size", "16", "--max_workspace_size", str(1 << 30), "-e", "spec.txt",
                   "--engine_file", "e.engine", "--strict_type_constraints", "--force_ptq", "--gen_ds_config",
                   "--verbose"]


def test_export_int8_without_a_calibration_source_is_refused():
    with pytest.raises(ArgvError, match="export.cal_source.*random data"):
        A.export("m", KEY, "o", export_cfg(data_type="int8"))


def test_tao_converter_with_every_optional_flag():
    got = render(A.tao_converter("model.etlt", KEY, (3, 384, 1248), ["output_cov/Sigmoid", "output_bbox/BiasAdd"],
                                 convert_cfg(strict_type_constraints=True, dla_core=1), "int8", "m.engine",
                                 cache="cal.bin", cal_batch_size=8,
                                 profiles=["input_1,1x3x384x1248,8x3x384x1248,16x3x384x1248"]))
    assert got == ["tao-converter", "-k", "s3cr3t-key", "-d", "3,384,1248",
                   "-o", "output_cov/Sigmoid,output_bbox/BiasAdd", "-c", "cal.bin", "-e", "m.engine",
                   "-b", "8", "-m", "16", "-t", "int8", "-w", str(1024 << 20), "-i", "nchw",
                   "-p", "input_1,1x3x384x1248,8x3x384x1248,16x3x384x1248", "-s", "-u", "1", "model.etlt"]


def test_tao_converter_fp16_minimal():
    got = render(A.tao_converter("m.onnx", KEY, "3,64,160", ["a", "b"], convert_cfg(workspace_mib=None), "fp16",
                                 "e.engine"))
    assert got == ["tao-converter", "-k", "s3cr3t-key", "-d", "3,64,160", "-o", "a,b", "-e", "e.engine",
                   "-m", "16", "-t", "fp16", "-i", "nchw", "m.onnx"]


def test_gen_trt_engine_int8():
    got = render(A.gen_trt_engine("m.onnx", None, "spec.txt", convert_cfg(), "int8", "e.engine", "results",
                                  cache="cal.bin", cal_data_file="cal.tensor", batches=10, batch_size=8))
    assert got == ["detectnet_v2", "gen_trt_engine", "-m", "m.onnx", "-e", "spec.txt", "--data_type", "int8",
                   "--engine_file", "e.engine", "--cal_cache_file", "cal.bin", "--cal_data_file", "cal.tensor",
                   "--batches", "10", "--batch_size", "8", "--min_batch_size", "1", "--opt_batch_size", "8",
                   "--max_batch_size", "16", "--workspace_size", "1024", "-r", "results"]


@pytest.mark.parametrize("call, key", [
    (lambda: A.export("m", KEY, "o", export_cfg(data_type="int4")), "export.data_type"),
    (lambda: A.export("m", KEY, "o", export_cfg(data_type="int8", batch_size=0), cal_data_file="t"),
     "export.batch_size"),
    (lambda: A.calibration_tensorfile("s", "o", -1, False), "calibration.max_batches"),
    (lambda: A.tao_converter("m", KEY, "3,384", ["a"], convert_cfg(), "fp32", "e"), "model input"),
    (lambda: A.tao_converter("m", KEY, (3, 2, 1), ["a"], convert_cfg(input_order="chw"), "fp32", "e"),
     "convert.input_order"),
    (lambda: A.tao_converter("m", KEY, (3, 2, 1), ["a"], convert_cfg(), "fp32", "e", profiles=["input_1,1x3"]),
     r"convert.profiles\[0\]"),
    (lambda: A.tao_converter("m", KEY, (3, 2, 1), ["a"], convert_cfg(max_batch_size=0), "fp32", "e"),
     "convert.max_batch_size"),
    (lambda: A.export("m", KEY, "o", export_cfg(verbose="yes")), "export.verbose"),
    (lambda: A.export("-rf", KEY, "o", export_cfg()), "model.file"),
])
def test_invalid_values_are_refused_naming_the_config_key(call, key):
    with pytest.raises(ArgvError, match=key):
        call()


def test_the_key_is_masked_when_printed():
    command = A.export("m", KEY, "o", export_cfg())
    assert "s3cr3t-key" not in " ".join(masked(command))
    assert "s3cr3t-key" not in repr(command) and "s3cr3t-key" not in str(command)


VALUES = st.text(st.characters(blacklist_characters="\0\n"), min_size=1, max_size=20)


@given(VALUES, VALUES, VALUES)
def test_no_value_can_add_a_word_or_a_flag(model, output, spec):
    try:
        command = render(A.export(model, KEY, output, export_cfg(), spec=spec))
    except ArgvError:
        assert model.startswith("-") or output.startswith("-") or spec.startswith("-")
        return
    # each value is exactly one element, at its flag's position
    assert command[command.index("-m") + 1] == model
    assert command[command.index("-o") + 1] == output
    assert command[command.index("-e") + 1] == spec
    assert len(command) == 12


FLAGS = {"-k", "-d", "-o", "-c", "-e", "-b", "-m", "-t", "-w", "-i", "-p", "-s", "-u"}


@given(VALUES, st.lists(VALUES, min_size=1, max_size=3), VALUES, VALUES, st.lists(VALUES, max_size=2),
       st.one_of(st.none(), st.integers(-3, 3)), st.sampled_from(["fp32", "fp16", "int8", "int4", "-s"]))
def test_converter_values_never_become_extra_words_or_flags(model, outputs, engine, cache, profiles, dla, data_type):
    try:
        command = render(A.tao_converter(model, KEY, (3, 64, 160), outputs, convert_cfg(dla_core=dla), data_type,
                                         engine, cache=cache, cal_batch_size=8, profiles=profiles))
    except ArgvError:
        return
    # walk the command: every flag takes exactly one value, except the bare -s; the model comes last
    assert command[0] == "tao-converter" and command[-1] == model
    i, seen = 1, []
    while i < len(command) - 1:
        flag = command[i]
        assert flag in FLAGS, f"{flag!r} stands where a flag should"
        seen.append(flag)
        i += 1 if flag == "-s" else 2
    assert i == len(command) - 1
    assert command[command.index("-e") + 1] == engine
    assert command[command.index("-o") + 1] == ",".join(outputs)
    assert seen.count("-p") == len(profiles)
    assert all("\0" not in a and "\n" not in a for a in command)


@given(VALUES, VALUES, st.integers(-5, 50), st.booleans())
def test_tensorfile_command_shape_is_fixed(spec, output, max_batches, validation):
    try:
        command = A.calibration_tensorfile(spec, output, max_batches, validation)
    except ArgvError:
        assert max_batches <= 0 or spec.startswith("-") or output.startswith("-")
        return
    assert command == ["detectnet_v2", "calibration_tensorfile", "-e", spec, "-o", output, "-m", str(max_batches)] + \
        (["--use_validation_set"] if validation else [])
