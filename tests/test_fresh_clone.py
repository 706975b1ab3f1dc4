"""What a newcomer finds in a fresh clone before anything has run: the folders the README promises."""
from __future__ import annotations

import subprocess

import pytest

from helpers.paths import ROOT


def tracked() -> set[str]:
    return set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split())


@pytest.mark.parametrize("folder", ["data", "models"])
def test_the_input_folders_are_in_git_with_a_readme(folder):
    assert f"{folder}/README.md" in tracked()


@pytest.mark.parametrize("folder", ["data", "models"])
def test_an_input_folder_readme_says_where_things_go_and_which_config_points_there(folder):
    text = (ROOT / folder / "README.md").read_text()
    assert f"{folder}/sample/" in text and "sample` stage" in text  # the generated sample
    assert "dvc add" in text  # your own, versioned with DVC
    assert (ROOT / "conf/experiment/example_own_data.yaml").is_file()
    assert "conf/experiment/example_own_data.yaml" in text  # the one config file


def test_the_generated_sample_stays_out_of_git():
    ignored = subprocess.run(["git", "check-ignore", "data/sample/x.png", "models/sample/m.onnx"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert ignored == ["data/sample/x.png", "models/sample/m.onnx"]
