"""The evaluate stage's plots, as DVC shows them: a precision-recall curve per class for the engine and
the fp32 model, whose area is the AP in metrics/evaluate.json, and detections drawn on validation images."""
from __future__ import annotations

import csv
import json
import re
import sys

import numpy as np
import pytest
from PIL import Image

from helpers.commands import run
from helpers.projects import SMALL_SAMPLE, make_project
from stages import bundled_sample
from stages.detectnet_v2 import plots
from stages.pipeline.layout import EVALUATE_REPORT, RESOLVED_SPEC

CURVES = "artifacts/evaluation/precision_recall"
DRAWN = "artifacts/evaluation/detections"
DISAGREEING = "artifacts/evaluation/disagreement"
PICTURED = "artifacts/evaluation/curves"


def plots_json(project, *args) -> dict:
    return json.loads(run(["dvc", "plots", *args, "--json"], project).stdout)["data"]


def curve(path) -> dict[str, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}


def test_dvc_draws_a_precision_recall_curve_per_class_for_the_engine_and_the_fp32_model(built_project):
    data = plots_json(built_project, "show")
    for name in bundled_sample.CLASSES:
        [plot] = data[f"{CURVES}/{name}.csv"]
        assert plot["type"] == "vega"
        values = plot["content"]["data"]["values"]
        assert {v["field"] for v in values} == {"engine", "reference"}
        assert all(0 <= float(v["recall"]) <= 1 and 0 <= float(v["dvc_inferred_y_value"]) <= 1 for v in values)


def test_dvc_shows_the_drawn_images(built_project):
    data = plots_json(built_project, "show")
    images = sorted(key for key, plots in data.items() if plots[0]["type"] == "image" and key.startswith(DRAWN))
    assert images == [f"{DRAWN}/{n:06d}.png" for n in range(4)]  # evaluate.draw_images


def test_each_classs_curves_are_also_a_png_that_dvc_shows(built_project):
    data = plots_json(built_project, "show")
    for name in bundled_sample.CLASSES:
        [plot] = data[f"{PICTURED}/{name}.png"]
        assert plot["type"] == "image"
        with Image.open(built_project / PICTURED / f"{name}.png") as picture:
            assert picture.format == "PNG" and picture.size == (480, 360)
            assert len(picture.convert("RGB").getcolors(1 << 16)) > 2  # axes, and the curves in colour


def test_the_plots_page_holds_the_pngs_itself_so_they_draw_offline(built_project, tmp_path):
    # `dvc plots show` loads Vega from a CDN for the CSV curves; the PNG curves and drawn images need nothing
    run(["dvc", "plots", "show", "-o", tmp_path / "page"], built_project)
    page = (tmp_path / "page" / "index.html").read_text()
    for source in re.findall(r'<img src="([^"]+)"', page):
        assert source.startswith("data:image/png;base64,") or (tmp_path / "page" / source).is_file(), source
    disagreeing = len(list((built_project / DISAGREEING).glob("*.png")))
    assert len(re.findall(r"<img ", page)) == len(bundled_sample.CLASSES) + 4 + disagreeing


def test_the_images_where_the_engine_and_fp32_disagree_most_are_drawn_most_first(built_project):
    """The int8 engine's boxes differ from fp32's somewhere on the validation or calibration images: those
    images are drawn (ranked by unmatched boxes), truth green where the image is labelled."""
    drawn = sorted((built_project / DISAGREEING).glob("*.png"), key=lambda p: int(p.name.split("_")[0]))
    report = json.loads((built_project / "artifacts/reports/evaluate.json").read_text())["agreement"]
    unmatched = sum(part["boxes"]["engine"] + part["boxes"]["fp32"] - 2 * part["boxes"]["matched"]
                    for part in (report["validation"], report["calibration"]))
    assert unmatched > 0 and 1 <= len(drawn) <= 4
    assert [int(p.name.split("_")[0]) for p in drawn] == list(range(1, len(drawn) + 1))
    assert plots_json(built_project, "show")[f"{DISAGREEING}/{drawn[0].name}"][0]["type"] == "image"


def test_the_curves_png_is_the_same_bytes_for_the_same_curves(tmp_path):
    rows = plots.curve_table({"engine": (np.array([0.2, 0.5]), np.array([1.0, 0.6])),
                              "reference": (np.array([0.3, 0.6]), np.array([0.9, 0.7]))})
    plots.draw_curves(tmp_path / "a.png", "car", rows)
    plots.draw_curves(tmp_path / "b.png", "car", rows)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_the_drawn_images_are_pngs_of_the_original_size(built_project):
    for path in sorted((built_project / DRAWN).iterdir()):
        original = built_project / "data/sample/validation/image_2" / path.name
        with Image.open(path) as drawn, Image.open(original) as source:
            assert drawn.format == "PNG" and drawn.size == source.size == (320, 120)
            assert np.any(np.asarray(drawn.convert("RGB")) != np.asarray(source.convert("RGB")))  # boxes drawn


def test_a_curves_samples_are_the_sample_ap(built_project):
    aps = json.loads((built_project / "metrics/evaluate.json").read_text())
    for name in bundled_sample.CLASSES:
        found = curve(built_project / CURVES / f"{name}.csv")
        at = np.isin(np.round(found["recall"], 6), np.round(np.linspace(0, 1, 11), 6))
        assert at.sum() == 11
        for model in ("engine", "reference"):
            assert found[model][at].mean() == pytest.approx(aps[model]["AP"][name], abs=1e-5)


@pytest.fixture
def integrating(project_copy):
    """The built project's evaluation again, with a spec that asks for INTEGRATE."""
    spec = project_copy / RESOLVED_SPEC
    spec.write_text(spec.read_text().replace("average_precision_mode: SAMPLE", "average_precision_mode: INTEGRATE"))
    run([sys.executable, "-m", "stages.evaluate", "--params", "params.yaml"], project_copy)
    return project_copy


def test_a_curves_area_is_the_integrate_ap(integrating):
    aps = json.loads((integrating / EVALUATE_REPORT).read_text())  # evaluate run by hand
    for name in bundled_sample.CLASSES:
        found = curve(integrating / CURVES / f"{name}.csv")
        for model in ("engine", "reference"):
            area = float(np.sum(np.diff(found["recall"]) * found[model][1:]))  # steps to the right
            assert area == pytest.approx(aps[model]["AP"][name], abs=1e-5)


def test_plots_diff_overlays_two_experiments(tmp_path):
    project = make_project(tmp_path / "project", SMALL_SAMPLE)
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fp32"], project)
    run(["dvc", "exp", "run", "-n", "int8", "-S", "export=int8"], project)
    data = plots_json(project, "diff", "HEAD", "int8")
    [plot] = data[f"{CURVES}/car.csv"]
    assert {v["rev"] for v in plot["content"]["data"]["values"]} == {"HEAD", "int8"}
    assert {tuple(p["revisions"]) for p in data[f"{DRAWN}/000000.png"]} == {("HEAD",), ("int8",)}
