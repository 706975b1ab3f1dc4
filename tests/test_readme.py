"""Every command and config file the docs show (README.md, docs/, bench/README.md), read from the pages
themselves: each fenced block is run here, checked against what it describes, or listed in SKIPPED with
the reason. A new block that is none of these fails the first test, so the docs cannot drift from the
code unnoticed. The site builds with `mkdocs build --strict` (a broken link or anchor fails) and every
page passes a Markdown lint (a table that would not render fails).

The blocks are parsed by hand (fences and their line numbers; shell lines with their continuations and
comments) rather than with pytest-examples or phmdoctest: those run Python blocks or shell sessions with
recorded output, while these blocks are commands to run in a project that a test builds first."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.commands import ran, run
from helpers.paths import ROOT, SHARED_SPECS
from helpers.projects import SMALL_SAMPLE, make_project
from stages.pipeline.layout import (CALIBRATION_CACHE, DEEPSTREAM_CONFIG, RESOLVED_SPEC, TENSORFILE,
                                    deployable_model)

README = ROOT / "README.md"


def doc_pages() -> list[Path]:
    """README.md, the site's pages and the benchmarks' README: every page a user reads."""
    return [README, *sorted((ROOT / "docs").rglob("*.md")), ROOT / "bench" / "README.md"]


@dataclass(frozen=True)
class Block:
    page: str  # relative to the project
    line: int  # of the opening fence
    lang: str
    text: str

    @property
    def key(self) -> str:
        """The block's first line, or its second after Hydra's package header: how the lists below name it."""
        lines = self.text.splitlines()
        return lines[1].strip() if lines[0].startswith("# @package") and len(lines) > 1 else lines[0].strip()

    def commands(self) -> list[str]:
        """Shell commands: continuations joined, comments and blank lines dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        commands = (line.split(" #", 1)[0].strip() for line in joined.splitlines())
        return [command for command in commands if command and not command.startswith("#")]


def page_blocks(page: Path) -> list[Block]:
    blocks, lines = [], page.read_text().splitlines(keepends=True)
    name = page.relative_to(ROOT).as_posix()
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[i])
        if opening:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append(Block(name, i + 1, opening.group(1), "".join(lines[i + 1:end])))
            i = end
        i += 1
    return blocks


def doc_blocks() -> list[Block]:
    return [b for page in doc_pages() for b in page_blocks(page)]


def block(key: str) -> Block:
    [found] = [b for b in doc_blocks() if b.key == key]
    return found


DAG = "dvc dag --dot | grep -- '->' | grep -v '^\"code\"'   # \"export\" -> \"convert\": what feeds what"
COMPARISON = ("dvc exp run --queue -S export=int8 -S 'backend.calibration_method=entropy,minmax,percentile' "
              "-S evaluate.on_gate_failure=record")
AUTO_CANDIDATES = ("dvc exp run -S export=int8 -S evaluate.on_gate_failure=record   # int8 with auto calibration, "
                   "the default: about 90 s")

FIRST_LOOK = "dvc metrics show   # the engine's mAP and AP per class, the fp32 model's, the drop, the gate's verdict"
FIRST_EXPERIMENT = "dvc exp run -S export=fp16                        # an experiment: the pipeline with one change"

# Blocks run or checked by a test here, by their first line
RUN = {
    FIRST_LOOK: "test_the_first_look_commands",
    FIRST_EXPERIMENT: "test_the_experiment_commands",
    "dvc repro                                         # run what changed (nothing, the second time)":
        "test_the_experiment_commands",
    "dvc exp show --only-changed                       # the columns that vary across experiments":
        "test_the_experiment_commands",
    "python -m stages.export export=fp16 --cfg job     # print the config it would use, run nothing":
        "test_the_experiment_commands",
    "dvc plots show                    # writes dvc_plots/index.html: open it in a browser":
        "test_the_experiment_commands",
    "dvc remote add -d shared /mnt/team/dvc-remote      # a local or network directory":
        "test_the_experiment_commands",
    "# conf/experiment/mine.yaml (the line above must stay the first: Hydra reads it only there)": "test_the_own_data_example",
    "# conf/experiment/trafficcamnet.yaml: an NGC model and its cache, judged on your own images": "test_the_ngc_cache_example",
    "dvc add data/traffic models/trafficcamnet": "test_the_ngc_cache_example",
    "dvc add data/kitti models/mine                    # version your data and model with DVC":
        "test_the_own_data_example",
    "# list every path-bearing field: FIELD_PATH<TAB>LINE<TAB>VALUE": "test_the_own_data_example",
    '{"engine": {"precision": "int8", "mAP": 0.6309, "AP": {"car": 0.7273, "cyclist": 0.6541, "pedestrian": 0.5112}},':
        "test_the_metrics_example_has_the_keys_evaluate_writes",
    "conf/config.yaml          defaults list + spec, sample, calibration, convert, evaluate sections":
        "test_the_config_menu_lists_the_groups_and_options_of_conf",
    "conf/              Hydra config groups (the menu: README.md, docs/how-to/compare-experiments.md)": "test_the_layout_names_files_that_exist",
    "dvc remote add -d team ssh://deploy@gpu-host.example/srv/dvc-remote   # .dvc/config: the URL, committed":
        "test_ssh_remote.join_remote, in every test of a real SSH server",
    DAG: "test_the_dag_command_tells_the_story_in_100_columns",
    COMPARISON: "test_sharing_and_queue.test_the_readme_comparison_shows_each_experiment_with_its_own_figures",
    AUTO_CANDIDATES: "test_the_experiment_commands",
    "| Experiment               | calibration.selection_mAP.fp32   | calibration.selection_mAP.entropy   | "
    "calibration.selection_mAP.minmax   | calibration.selection_mAP.percentile   | calibration.chosen   | "
    "calibration.selection_agreement.entropy   | calibration.selection_agreement.minmax   | "
    "calibration.selection_agreement.percentile   | calibration.drop   | engine.mAP   | gate         |":
        "test_the_experiment_commands (its header is what the command prints)",
    "make lock upgrade=tqdm       # tqdm to the newest version pyproject.toml allows; every other pin stays":
        "test_environment.test_the_readme_upgrade_commands_rerun_exactly_the_stages_that_run_the_package",
}

# Blocks not run here, each with the reason
SKIPPED = {
    "WARNING calibration: calibration.selection_images is 32, but the spec's training images hold 24 (outside the "
    "validation set): auto selects on all 24":
        "the logs of an LPDNet-sized run: test_verdict_pipeline.test_a_dataset_the_size_of_lpdnets_gets_an_int8_"
        "engine_that_passes_with_the_defaults runs it and checks the warning and the verdict",
    "make serve   # Triton on localhost (HTTP 8000, gRPC 8001) with the engine, until Ctrl-C":
        "serves until stopped: test_triton.test_make_serve_stops_the_server_and_exits_cleanly_on_a_signal runs "
        "its command on a built repository and stops it",
    "make repro   # sets itself up (.venv), then runs the whole pipeline on the bundled sample: no TAO, no GPU":
        "`make test` is what runs this suite; `make repro` is CI's and the fresh-clone story's (dvc repro of "
        "the full sample: test_the_experiment_commands runs the same dvc repro on a small one)",
    "code ──> (each stage's code fingerprint, to every stage below)":
        "a drawing of the stages; test_dvc_pipeline checks dvc.yaml's stages and their order",
    "import numpy as np, tritonclient.http as http":
        "needs a Triton server: test_triton starts one and sends this request through tritonclient",
    "IMG=data/sample/validation/image_2/000000.png":
        "needs a Triton server: test_triton sends the same binary-data request",
    "export TAO_KEY=...            # or: backend.key_file=path/to/file/holding/the/key":
        "needs docker and TAO's image: test_tao_backends runs backend=tao_docker against a stand-in docker",
    "# on a machine that built (any platform): share the outputs and the run-cache":
        "needs machines of different GPUs: test_platform runs this fleet with a stand-in nvidia-smi",
    "make test-cpu-paths    # the suite on the Haswell path (AVX2, no AVX-512) and the SandyBridge path (AVX)":
        "runs this suite twice (about 26 minutes); test_cpu_paths checks that each path selects its kernels",
    "make test-fast    # every test that builds no whole project: the loop while changing code":
        "runs part of this suite; test_fast_loop collects what its Makefile recipe selects and checks the sorting",
}


def test_every_example_is_run_or_listed_as_skipped():
    blocks = doc_blocks()
    keys = [b.key for b in blocks]
    unlisted = [f"{b.page}:{b.line}: {b.key}" for b in blocks if b.key not in RUN and b.key not in SKIPPED]
    assert unlisted == [], "new examples in the docs, neither run by a test here nor listed in SKIPPED"
    stale = sorted((set(RUN) | set(SKIPPED)) - set(keys))
    assert stale == [], "listed here but no longer in the docs"
    assert len(keys) == len(set(keys)), "two blocks start with the same line: make them distinct"
    assert set(RUN).isdisjoint(SKIPPED)


def cells(row: str) -> list[str]:
    """A Markdown table row's cells, stripped."""
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def bash(command: str, project: Path, **kw):
    return run(["bash", "-c", command], project, **kw)


# ----------------------------------------------------------------- the blocks run here

def test_the_dag_command_tells_the_story_in_100_columns():
    [command] = block(DAG).commands()
    edges = bash(command, ROOT).stdout.splitlines()
    assert edges and all(len(line) <= 100 for line in edges)
    assert not [line for line in edges if line.startswith('"code"')]
    for edge in ('"calibration_tensorfile" -> "export"', '"export" -> "convert"', '"convert" -> "evaluate"',
                 '"evaluate" -> "metrics"', '"platform" -> "convert"', '"convert" -> "triton"'):
        assert f"{edge};" in edges, edge


def test_the_first_look_commands(built_project, tmp_path):
    metrics, plots = block(FIRST_LOOK).commands()
    shown = bash(metrics, built_project).stdout
    assert "metrics/evaluate.json" in shown and "engine.mAP" in shown and "gate" in shown
    page = bash(plots + f" -o {tmp_path / 'plots'}", built_project).stdout
    assert "index.html" in page and (tmp_path / "plots/index.html").is_file()


def test_the_experiment_commands(tmp_path):
    project = make_project(tmp_path / "project", SMALL_SAMPLE)
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline"], project)

    fp16, side_by_side = block(FIRST_EXPERIMENT).commands()  # README's "Comparing experiments"
    bash(fp16, project)
    table = bash(side_by_side, project).stdout
    assert "engine.mAP" in table and "fp16" in table and "gate" in table

    experiments = block("dvc repro                                         # run what changed (nothing, "
                        "the second time)").commands()
    for command in experiments:
        if "<name>" in command:
            [name, *_] = run(["dvc", "exp", "list", "--name-only"], project).stdout.split()
            command = command.replace("<name>", name)
        bash(command, project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["export"]["data_type"] in ("int8", "fp16")  # an experiment's workspace, applied

    [name, *_] = run(["dvc", "exp", "list", "--name-only"], project).stdout.split()
    for command in block("dvc exp show --only-changed                       # the columns that vary across "
                         "experiments").commands():
        bash(command.replace("<exp>", name), project)
    assert (project / "experiments.csv").read_text().count("\n") >= 3  # the header, HEAD and each experiment

    *run_int8, show_candidates = block(AUTO_CANDIDATES).commands()
    for command in run_int8:
        bash(command, project)
    table = bash(show_candidates, project).stdout.splitlines()
    shown = [b for b in doc_blocks() if b.key.startswith("| Experiment ") and "selection_mAP" in b.key]
    [columns] = [cells(b.key) for b in shown]
    assert cells(table[0]) == columns  # the README shows the columns DVC prints (their widths follow the values)
    workspace = dict(zip(columns, cells(table[2])))
    assert workspace["calibration.chosen"] in ("entropy", "minmax", "percentile")  # auto chose one
    kept = float(workspace[f"calibration.selection_mAP.{workspace['calibration.chosen']}"])
    # the gate is off in this project, so nothing is left out of INT8: the drop is the chosen method's
    # (DVC shows 5 significant digits)
    assert float(workspace["calibration.drop"]) == pytest.approx(float(workspace["calibration.selection_mAP.fp32"]) - kept,
                                                                 abs=1e-4)

    for command in block("python -m stages.export export=fp16 --cfg job     # print the config it would use, "
                         "run nothing").commands():
        result = bash(command, project)
        if "--cfg job" in command:
            assert yaml.safe_load(result.stdout)["export"]["data_type"] == "fp16"
    bash("dvc repro", project)  # the hand-run export changed artifacts/export: back to what dvc.lock says

    for command in block("dvc plots show                    # writes dvc_plots/index.html: open it in a "
                         "browser").commands():
        bash(command.replace("<exp>", name), project)
    assert (project / "dvc_plots/index.html").is_file()

    remote = tmp_path / "team-remote"
    sharing = [c.replace("/mnt/team/dvc-remote", str(remote)) for c in
               block("dvc remote add -d shared /mnt/team/dvc-remote      # a local or network directory").commands()]
    *here, there = sharing
    run(["git", "checkout", "-q", "--", "."], project)
    bash("dvc checkout -q", project)
    for command in here:
        bash(command, project)
    assert run(["git", "status", "--porcelain", ".dvc/config"], project).stdout == ""  # committed: clones see it
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    result = bash(there, clone)
    assert ran(result.stdout) == []


def _kitti_like(root: Path, spec: str) -> None:
    """What the own-data example says is there: NVIDIA's spec where it says, KITTI-style folds, and a model
    whose coverage head detects nothing (so int8 and fp32 agree exactly, mAP 0: the gate passes on any CPU)."""
    import onnx
    from onnx import numpy_helper

    from stages import bundled_sample
    bundled_sample.write_dataset(root / "data/kitti", {"training": 8, "val": 8}, seed=3, size=(320, 120))
    shutil.copy(SHARED_SPECS / "detectnet_v2_train_resnet18_kitti.txt", root / spec)
    (root / "models/mine").mkdir(parents=True)
    path = root / "models/mine/resnet18_detector.onnx"
    bundled_sample.build_model(path, 1248, 384, base_width=4, seed=2)
    model = onnx.load(path)
    [head] = [n for n in model.graph.node if n.op_type == "Conv" and n.output[0] == "output_cov/BiasAdd"]
    bias = next(i for i in model.graph.initializer if i.name == head.input[2])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) * 0 - 1000, bias.name))
    onnx.save(model, path)


@pytest.mark.parametrize("template", ["README.md", "conf/experiment/example_own_data.yaml"])
def test_a_users_spec_lies_in_the_data_folder_dvc_add_versions(template):
    # one place for a spec, beside its data: `dvc add <dataset.root>` then versions the spec with the images
    text = (ROOT / template).read_text() if template.endswith(".yaml") else block(
        "# conf/experiment/mine.yaml (the line above must stay the first: Hydra reads it only there)").text
    dataset = yaml.safe_load(text)["dataset"]
    assert dataset["spec"].startswith(dataset["root"] + "/"), dataset


def test_the_own_data_example(tmp_path):
    if not (SHARED_SPECS / "detectnet_v2_train_resnet18_kitti.txt").is_file():
        pytest.skip(f"{SHARED_SPECS} is absent: NVIDIA's tutorial specs are not here")
    project = make_project(tmp_path / "project", SMALL_SAMPLE)
    config = block("# conf/experiment/mine.yaml (the line above must stay the first: Hydra reads it only there)")
    _kitti_like(project, yaml.safe_load(config.text)["dataset"]["spec"])
    second_line = config.text.splitlines()[1]
    target = re.search(r"conf/experiment/\w+\.yaml", second_line).group(0)  # where the example says it goes
    (project / target).write_text(config.text)

    for command in block("dvc add data/kitti models/mine                    # version your data and model "
                         "with DVC").commands():
        bash(command, project)
    evaluation = json.loads((project / "metrics/evaluate.json").read_text())
    assert evaluation["images"] == 8 and evaluation["engine"]["precision"] == "int8"
    assert 'image_directory_path: "data/kitti/training"' in (project / RESOLVED_SPEC).read_text()
    assert "infer-dims=3;384;1248" in (project / DEEPSTREAM_CONFIG).read_text()

    # the spec tool's examples, on the same KITTI-shaped data (TFRecords made where the spec names them)
    for fold in ("kitti_trainval", "kitti_val"):
        (project / "data/kitti/tfrecords" / fold).mkdir(parents=True)
        (project / "data/kitti/tfrecords" / fold / "shard-00000-of-00001").write_bytes(b"records")
    shared = ROOT.parent / "shared"
    (project.parent / "shared").mkdir(exist_ok=True)
    shutil.copytree(shared / "specs", project.parent / "shared/specs", dirs_exist_ok=True)
    commands = block("# list every path-bearing field: FIELD_PATH<TAB>LINE<TAB>VALUE").commands()
    listed = bash(commands[0], project).stdout
    assert "dataset_config.data_sources[0].image_directory_path\t" in listed
    bash(commands[1], project)
    resolved = (project / "resolved_spec.txt").read_text()
    assert str(project / "data/kitti") in resolved and "batch_size_per_gpu: 8" in resolved


def test_the_ngc_cache_example(tmp_path):
    """NGC's way: a TAO 5 ONNX and the cache TensorRT 10.3 made on NVIDIA's images; the user's own images
    are for judging only: the training images here are not images at all, so any calibration that read
    one would fail."""
    import onnx

    from stages import bundled_sample
    from tao_shapes import as_tao_export
    from stages.formats.calibration_cache import read_cache
    from tao_family import TENSORRT_OWN_NAMES, Member, write_ngc_cache

    project = make_project(tmp_path / "project", SMALL_SAMPLE)
    config = block("# conf/experiment/trafficcamnet.yaml: an NGC model and its cache, judged on your own images")
    settings = yaml.safe_load(config.text)
    (project / re.search(r"conf/experiment/\w+\.yaml", config.text).group(0)).write_text(config.text)
    classes, model = tuple(settings["dataset"]["classes"]), project / settings["model"]["file"]
    ngc = Member("trafficcamnet", 12, classes, 960, 544, train_images=24)
    data = project / settings["dataset"]["root"]
    bundled_sample.write_dataset(data, {"training": 8, "validation": 8}, 5, (960, 544), classes=classes)
    bundled_sample.write_spec(project / settings["dataset"]["spec"], 960, 544, 4, classes)
    for image in (data / "training/image_2").iterdir():
        image.write_bytes(b"not an image: calibration must not read it")
    model.parent.mkdir(parents=True)
    bundled_sample.write_dataset(tmp_path / "nvidia", {"training": ngc.train_images}, 6, (960, 544), classes=classes)
    bundled_sample.fit_model(tmp_path / "plain.onnx", tmp_path / "nvidia/training", classes, 960, 544, ngc.widths)
    onnx.save(as_tao_export(onnx.load(tmp_path / "plain.onnx"), ngc.opset), model)
    cache = model.with_suffix(".txt")
    scales = write_ngc_cache(model, ngc, cache)

    for command in block("dvc add data/traffic models/trafficcamnet").commands():
        bash(command, project)
    assert json.loads((project / "metrics/convert.json").read_text())["precision"] == "int8"
    built = json.loads((project / "metrics/export.json").read_text())["nvidia_builder"]  # NVIDIA's parser took it
    assert built["checked"] and built["graph"] == "model.int8.onnx" and built["plan_bytes"] > 0
    assert not (project / TENSORFILE).exists()
    assert "no calibration tensorfile made, no image read" in (
        project / "artifacts/calibration/calibration_tensorfile.log").read_text()
    log = (project / "artifacts/export/export.log").read_text()
    assert f"{len(TENSORRT_OWN_NAMES)} of its names match no tensor of the model" in log
    assert all(name in log for name in TENSORRT_OWN_NAMES)
    header, used = read_cache(project / CALIBRATION_CACHE)
    assert header == "TRT-100300-EntropyCalibration2" and used["input_1"] == scales["input_1:0"]
    # the deployable ONNX: the cache's scales as Q/DQ, by TensorRT's rules; in fp16 (export.high_precision), so
    # the input's scale is the cache's rounded to fp16
    from stages.quantization.lint import lint
    deployable = onnx.load(project / deployable_model("int8"))
    assert lint(deployable, "int8") == []
    made_by = {o: n for n in deployable.graph.node for o in n.output}
    quantize = next(n for n in deployable.graph.node if n.op_type == "QuantizeLinear"
                    and made_by[n.input[0]].op_type == "Cast" and made_by[n.input[0]].input[0] == "input_1")
    [scale] = [i for i in deployable.graph.initializer if i.name == quantize.input[1]]
    assert onnx.numpy_helper.to_array(scale) == np.float16(scales["input_1:0"])

    cache.write_text(cache.read_text().replace("TRT-100300", "TRT-100301"))  # a new cache: export re-runs
    status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    assert "export" in status


# ----------------------------------------------------------------- the blocks checked against the code

def test_the_metrics_example_has_the_keys_evaluate_writes(built_project):
    example = json.loads(block('{"engine": {"precision": "int8", "mAP": 0.6309, "AP": {"car": 0.7273, "cyclist": '
                               '0.6541, "pedestrian": 0.5112}},').text)
    written = json.loads((built_project / "metrics/evaluate.json").read_text())

    def shape(tree):
        return {k: shape(v) for k, v in tree.items()} if isinstance(tree, dict) else type(tree).__name__

    assert shape(example) == shape(written)


def _choices(group: Path) -> set[str]:
    """The options of a config group: its files, less those the others start from (conf/export/base.yaml)."""
    files = {p.stem: yaml.safe_load(p.read_text()) or {} for p in group.glob("*.yaml")}
    shared = {entry for config in files.values() for entry in config.get("defaults", []) if isinstance(entry, str)}
    return set(files) - shared


def test_the_config_menu_lists_the_groups_and_options_of_conf():
    menu = block("conf/config.yaml          defaults list + spec, sample, calibration, convert, evaluate "
                 "sections").text
    for line in menu.splitlines():
        folder, description = line.split(None, 1)
        assert (ROOT / folder).exists(), line
        if folder.endswith("/") and "|" in description:
            options = {o.strip() for o in description.split("|")}
            assert options == _choices(ROOT / folder), line
    assert {line.split()[0] for line in menu.splitlines()} >= {f"conf/{p.name}/" for p in (ROOT / "conf").iterdir()
                                                               if p.is_dir()}


def test_the_layout_names_files_that_exist():
    layout = block("conf/              Hydra config groups (the menu: README.md, docs/how-to/compare-experiments.md)").text
    folder = None
    for line in layout.splitlines():
        head = re.match(r"^(\s*)(\S+/)\s", line)
        if head:
            folder = head.group(2) if not head.group(1) else f"stages/{head.group(2)}"
            assert (ROOT / folder).is_dir() or folder in ("artifacts/",), line
        for name in re.findall(r"\b([a-z_]+\.py)\b", line):
            candidates = [ROOT / folder / name, ROOT / "stages" / name, ROOT / "tests" / name]
            assert any(c.is_file() for c in candidates), f"{name} ({line.strip()})"
    tops = {p.name for p in (ROOT / "stages").glob("*.py") if p.name != "__init__.py"}
    assert tops <= set(re.findall(r"\b([a-z_]+\.py)\b", layout)), "a stage module the layout does not name"
