"""`python -m stages.spec`: the interface other tools script against."""
from __future__ import annotations

import subprocess
import sys

import pytest

from helpers.paths import ROOT

SPEC = """\
# container paths, as NVIDIA writes them
dataset_config {
  data_sources {
    tfrecords_path: "/workspace/tao-experiments/data/tfrecords/*"
    image_directory_path: "/workspace/tao-experiments/data/training"
  }
}
training_config {
  batch_size_per_gpu: 4
}
"""


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "stages.spec", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True)


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "spec.txt"
    path.write_text(SPEC)
    return path


def test_paths_prints_field_line_and_value_separated_by_tabs(spec):
    result = run("paths", spec)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "dataset_config.data_sources[0].tfrecords_path\t4\t/workspace/tao-experiments/data/tfrecords/*",
        "dataset_config.data_sources[0].image_directory_path\t5\t/workspace/tao-experiments/data/training",
    ]


def test_paths_escapes_tabs_so_each_field_stays_on_one_line(tmp_path):
    path = tmp_path / "odd.txt"
    path.write_text('image_directory_path: "/a\\tb\\nc"\n')
    assert run("paths", path).stdout == "image_directory_path\t1\t/a\\tb\\nc\n"


def test_substitute_writes_the_rewritten_spec(spec, tmp_path):
    out = tmp_path / "resolved.txt"
    result = run("substitute", spec, "--map", f"/workspace/tao-experiments/data={tmp_path}/d",
                 "--set", "training_config.batch_size_per_gpu=8", "-o", out)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == (SPEC.replace("/workspace/tao-experiments/data", f"{tmp_path}/d")
                               .replace("batch_size_per_gpu: 4", "batch_size_per_gpu: 8"))


def test_substitute_to_stdout(spec):
    result = run("substitute", spec, "--map", "/workspace=/w", "-o", "-")
    assert result.returncode == 0
    assert 'image_directory_path: "/w/tao-experiments/data/training"' in result.stdout


def test_check_passes_when_every_input_exists(spec, tmp_path):
    (tmp_path / "d" / "training").mkdir(parents=True)
    (tmp_path / "d" / "tfrecords").mkdir()
    (tmp_path / "d" / "tfrecords" / "shard-0").write_bytes(b"")
    out = tmp_path / "resolved.txt"
    result = run("substitute", spec, "--map", f"/workspace/tao-experiments/data={tmp_path}/d", "-o", out, "--check")
    assert result.returncode == 0, result.stderr
    assert out.exists()


def test_check_failure_exits_2_with_the_report_and_writes_nothing(spec, tmp_path):
    out = tmp_path / "resolved.txt"
    result = run("substitute", spec, "--map", f"/workspace/tao-experiments/data={tmp_path}/nowhere",
                 "-o", out, "--check")
    assert result.returncode == 2
    assert "line 4: dataset_config.data_sources[0].tfrecords_path" in result.stderr
    assert "matches no file" in result.stderr
    assert "line 5: dataset_config.data_sources[0].image_directory_path" in result.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [spec]


def test_malformed_spec_exits_2_with_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a {\n  b: \n}\n")
    result = run("paths", bad)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}:3:1: expected a value for field 'b', found '}}'"


def test_missing_spec_exits_2_naming_it(tmp_path):
    result = run("paths", tmp_path / "nope.txt")
    assert result.returncode == 2
    assert f"cannot read spec {tmp_path / 'nope.txt'}" in result.stderr


def test_override_of_absent_field_exits_2_naming_it(spec, tmp_path):
    result = run("substitute", spec, "--set", "training_config.epochs=1", "-o", tmp_path / "o.txt")
    assert result.returncode == 2
    assert "field path 'training_config.epochs' does not exist" in result.stderr
    assert not (tmp_path / "o.txt").exists()


def test_malformed_map_exits_2(spec, tmp_path):
    result = run("substitute", spec, "--map", "/workspace", "-o", tmp_path / "o.txt")
    assert result.returncode == 2
    assert "expected REFERENCE=REAL_PATH" in result.stderr


def test_help_documents_both_commands():
    result = run("--help")
    assert result.returncode == 0
    assert "paths" in result.stdout and "substitute" in result.stdout
    assert "--map" in run("substitute", "--help").stdout
