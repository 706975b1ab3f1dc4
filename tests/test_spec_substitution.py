"""Substitution by field: component boundaries, longest reference first, globs, odd characters,
value overrides; and the result still parses as TAO parses it."""
from __future__ import annotations

import pytest

from helpers.tao import tao_message_for
from stages.spec import Spec, SpecPathError, path_values, quote_string, substitute

TRAIN = """\
# images under /workspace/data stay documented here
dataset_config {
  data_sources {
    tfrecords_path: "/workspace/data/tfrecords/kitti_trainval/*"
    image_directory_path: "/workspace/data/training"
  }
  data_sources {
    tfrecords_path: "/workspace/data2/tfrecords/extra-fold-[0-9]*"
    image_directory_path: "/workspace/data2/x"
  }
  image_extension: "png"
}
model_config {
  pretrained_model_file: "/workspace/models/resnet18.hdf5"
  arch: "/workspace/data"
}
training_config {
  batch_size_per_gpu: 4
  num_epochs: 120
  visualizer { enabled: true }
}
"""


def values(spec: Spec) -> dict[str, str]:
    return {pv.match.path: pv.value for pv in path_values(spec)}


def test_reference_matches_only_at_path_component_boundaries():
    out, _ = substitute(Spec(TRAIN), {"/workspace/data": "/real/data"})
    assert values(out)["dataset_config.data_sources[0].image_directory_path"] == "/real/data/training"
    assert values(out)["dataset_config.data_sources[1].image_directory_path"] == "/workspace/data2/x"


def test_longest_reference_wins_when_references_nest():
    mapping = {"/workspace/data": "/real/data", "/workspace/data/tfrecords": "/fast/records"}
    out, _ = substitute(Spec(TRAIN), mapping)
    assert values(out)["dataset_config.data_sources[0].tfrecords_path"] == "/fast/records/kitti_trainval/*"
    assert values(out)["dataset_config.data_sources[0].image_directory_path"] == "/real/data/training"


def test_glob_part_of_tfrecords_path_is_kept():
    out, _ = substitute(Spec(TRAIN), {"/workspace/data2": "/mnt/d2"})
    assert values(out)["dataset_config.data_sources[1].tfrecords_path"] == "/mnt/d2/tfrecords/extra-fold-[0-9]*"


def test_trailing_slashes_on_either_side_do_not_matter():
    out, _ = substitute(Spec(TRAIN), {"/workspace/models/": "/opt/models/"})
    assert values(out)["model_config.pretrained_model_file"] == "/opt/models/resnet18.hdf5"


def test_a_path_equal_to_the_reference_is_mapped():
    out, _ = substitute(Spec(TRAIN), {"/workspace/data/training": "/imgs"})
    assert values(out)["dataset_config.data_sources[0].image_directory_path"] == "/imgs"


def test_comments_keys_and_non_path_fields_are_never_rewritten():
    out, _ = substitute(Spec(TRAIN), {"/workspace/data": "/real/data"})
    assert out.dumps().startswith("# images under /workspace/data stay documented here\n")
    assert 'arch: "/workspace/data"' in out.dumps()


def test_only_the_rewritten_values_change():
    out, rewrites = substitute(Spec(TRAIN), {"/workspace/data": "/r"})
    before, after = TRAIN.splitlines(), out.dumps().splitlines()
    changed = [i + 1 for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert changed == [4, 5]
    assert [r.path_value.match.line for r in rewrites] == [4, 5]


@pytest.mark.parametrize("real", [
    "/data/with space", "/data/100%", "/data/a&b", "/data/#hash", '/data/dq"uote', "/data/sq'uote",
    "/data/ünïcödé/日本", "/data/back\\slash", "/data/sed%s%x%g",
])
def test_special_characters_in_real_paths_survive(real):
    out, _ = substitute(Spec(TRAIN), {"/workspace/data": real})
    reparsed = Spec(out.dumps())
    assert values(reparsed)["dataset_config.data_sources[0].image_directory_path"] == real + "/training"


@pytest.mark.parametrize("real", ["/data/with space", "/data/a&b%#", '/q"\'', "/ü/日本", "/b\\s"])
def test_special_characters_survive_protobufs_own_parser(real):
    from google.protobuf import text_format
    pytest.importorskip("nvidia_tao_deploy", reason="nvidia-tao-deploy is not installed")
    out, _ = substitute(Spec(TRAIN.replace('arch: "/workspace/data"', 'arch: "resnet"')), {"/workspace/data": real})
    message = text_format.Merge(out.dumps(), tao_message_for(out.dumps()))
    assert message.dataset_config.data_sources[0].image_directory_path == real + "/training"


def test_single_quoted_values_keep_their_quote_style():
    spec = Spec("model_config { pretrained_model_file: '/workspace/m.hdf5' }")
    out, _ = substitute(spec, {"/workspace": "/it's"})
    assert out.dumps() == "model_config { pretrained_model_file: '/it\\'s/m.hdf5' }"


def test_concatenated_strings_are_rewritten_as_one_literal():
    spec = Spec('model_config { pretrained_model_file: "/workspace/" "m.hdf5" }')
    out, _ = substitute(spec, {"/workspace": "/w"})
    assert out.dumps() == 'model_config { pretrained_model_file: "/w/m.hdf5" }'


def test_value_overrides_by_field_path():
    out, _ = substitute(Spec(TRAIN), {}, {"training_config.batch_size_per_gpu": "8",
                                         "training_config.num_epochs": "1",
                                         "dataset_config.image_extension": "jpg"})
    assert "batch_size_per_gpu: 8\n" in out.dumps()
    assert "num_epochs: 1\n" in out.dumps()
    assert 'image_extension: "jpg"' in out.dumps()


def test_override_of_a_path_absent_from_the_spec_is_an_error_naming_it():
    with pytest.raises(SpecPathError, match="training_config.batch_size_per_gpux"):
        substitute(Spec(TRAIN, "train.txt"), {}, {"training_config.batch_size_per_gpux": "8"})


def test_override_of_a_message_is_an_error():
    with pytest.raises(SpecPathError, match=r"cannot set training_config.visualizer \(line 20\): it is a message"):
        substitute(Spec(TRAIN), {}, {"training_config.visualizer": "1"})


def test_override_with_a_non_number_for_a_number_field_is_an_error():
    with pytest.raises(SpecPathError, match="'eight' is not a number"):
        substitute(Spec(TRAIN), {}, {"training_config.batch_size_per_gpu": "eight"})


def test_quote_string_escapes_what_the_format_requires():
    assert quote_string('a"b\\c\nd\x01') == '"a\\"b\\\\c\\nd\\001"'


def test_shared_spec_after_substitution_parses_as_tao_parses_it(shared_spec, tmp_path):
    from google.protobuf import text_format
    original = Spec.load(shared_spec)
    real = str(tmp_path / "my data & models (100%)")
    out, rewrites = substitute(original, {"/workspace/tao-experiments": real})
    assert rewrites, "the tutorial specs all hold /workspace/tao-experiments paths"
    assert all(v.startswith(real) for v in values(out).values())
    message = tao_message_for(out.dumps())
    text_format.Merge(out.dumps(), message)
    assert real in str(message)
