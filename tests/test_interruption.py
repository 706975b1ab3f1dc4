"""SIGINT and SIGTERM in the middle of each long stage: no partial output in place, the previous
output intact, no lock held, and the next `dvc repro` completes."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.commands import ran, run, up_to_date
from helpers.projects import make_project
from stages.pipeline.layout import CALIBRATION_DIR

# big enough that each stage takes a while (gzip makes the tensorfile slow to write)
MEDIUM = ["sample.train_images=80", "sample.val_images=16", "sample.image_width=640", "sample.image_height=200",
          "sample.input_width=624", "sample.input_height=192", "calibration.max_batches=10",
          "calibration.compression=gzip", "export=int8", "convert.verify_images=16",
          "evaluate.max_map_drop=null"]  # the gate is not what these tests are about


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("interrupt") / "project", MEDIUM)
    run(["dvc", "repro"], project)
    return project


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def partial_dirs(project: Path) -> list[Path]:
    return [p for p in (project / "artifacts").iterdir() if p.name.endswith(".partial")]


def interrupt(command, project: Path, signum: int, started) -> subprocess.CompletedProcess:
    """Start command, wait until `started()` is true (the stage is mid-way), send signum to its group."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not started() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "the stage finished before it could be interrupted"
    time.sleep(0.05)
    os.killpg(process.pid, signum)
    out, err = process.communicate(timeout=60)
    result = subprocess.CompletedProcess(command, process.returncode, out, err)
    result.args_pid = process.pid  # the stage's process group (start_new_session)
    return result


def mid_way(project: Path, name: str):
    """True once a stage has staged part of its output (a file besides its log) in a temp dir."""
    def started() -> bool:
        return any(p.name.startswith(f".{name}.") and any(f.suffix != ".log" for f in p.iterdir())
                   for p in partial_dirs(project))
    return started


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage, output", [("calibration_tensorfile", "calibration"), ("export", "export"),
                                           ("convert", "engine")])
def test_interrupted_stage_keeps_the_previous_output(built, stage, output, signum):
    before = digest(built / "artifacts" / output)
    result = interrupt([sys.executable, "-m", f"stages.{stage}", "--params", "params.yaml"], built, signum,
                       mid_way(built, output))
    assert result.returncode in (130, 143), result.stderr
    assert "interrupted" in result.stderr and "no partial output was kept" in result.stderr
    assert partial_dirs(built) == []
    assert digest(built / "artifacts" / output) == before


def test_a_ctrl_c_in_a_parallel_evaluation_keeps_the_previous_outputs_and_leaves_no_worker(built):
    """Its post-processing runs on worker threads (one per allowed core) while the engine runs the next batch.
    (SIGTERM takes the same way out: test_interrupted_stage_keeps_the_previous_output.)"""
    signum = signal.SIGINT
    outputs = (built / "artifacts" / "evaluation", built / "artifacts" / "reports")
    before = [digest(folder) for folder in outputs]
    evaluating = mid_way(built, "evaluation")
    result = interrupt([sys.executable, "-m", "stages.evaluate", "--params", "params.yaml"],
                       built, signum, lambda: evaluating() or _progress_shown(built))
    assert result.returncode in (130, 143), result.stderr
    assert "no partial output was kept" in result.stderr
    assert partial_dirs(built) == [] and [digest(folder) for folder in outputs] == before
    with pytest.raises(ProcessLookupError):  # nothing of the stage's process group is left running
        os.killpg(result.args_pid, 0)


def _progress_shown(project: Path) -> bool:
    """The evaluate stage's log has its first line: the models are loaded, the images are being evaluated."""
    return any(log.stat().st_size for p in partial_dirs(project) if p.name.startswith(".evaluation.")
               for log in p.glob("*.log"))


def test_a_temp_dir_left_by_a_killed_stage_is_removed_by_the_next_run(built):
    before = digest(built / "artifacts" / "export")
    result = interrupt([sys.executable, "-m", "stages.export", "--params", "params.yaml"], built, signal.SIGKILL,
                       mid_way(built, "export"))
    assert result.returncode == -signal.SIGKILL
    assert len(partial_dirs(built)) == 1  # nothing can clean up after SIGKILL ...
    assert digest(built / "artifacts" / "export") == before  # ... but the output in place is whole
    run([sys.executable, "-m", "stages.export", "--params", "params.yaml"], built)
    assert partial_dirs(built) == []  # ... and the next run removes what the dead one left


def test_a_temp_dir_left_by_a_killed_stage_goes_on_the_next_repro_even_where_nothing_reruns(built):
    """A stage killed by SIGKILL whose output DVC then restores from its run-cache never runs again to clean
    up: the validate stage, which runs on every repro, removes what dead processes left; a live one's stays."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = built / "artifacts" / f".engine.{dead.pid}.x1y2z3.partial"
    live = built / "artifacts" / f".engine.{os.getpid()}.a1b2c3.partial"
    for folder in (left, live):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half an engine")
    try:
        result = run(["dvc", "repro"], built)
        assert ran(result.stdout) == [] and not left.exists() and live.is_dir()
        assert f"validate: removed artifacts/{left.name}, left by a stage that was killed" in result.stderr
    finally:
        shutil.rmtree(live, ignore_errors=True)


def test_interrupted_dvc_repro_releases_its_lock_and_the_next_repro_completes(built):
    (built / "params.yaml").write_text((built / "params.yaml").read_text().replace("seed: 42", "seed: 43"))
    result = interrupt(["dvc", "repro"], built, signal.SIGINT, mid_way(built, "calibration"))
    assert result.returncode != 0
    assert partial_dirs(built) == []
    again = run(["dvc", "repro"], built)
    assert "Running stage 'calibration_tensorfile'" in again.stdout
    assert up_to_date(built)


def test_interrupted_dvc_repro_keeps_the_previous_outputs(built):
    # DVC deletes a stage's outputs before it runs the command; the interrupted stage puts back what
    # dvc.lock records, from DVC's cache, so nothing is missing and `dvc status` lists nothing deleted
    params = built / "params.yaml"
    original = params.read_text()
    before = digest(built / "artifacts" / "calibration")
    seed = yaml.safe_load(original)["calibration"]["seed"]  # whatever an earlier test left
    params.write_text(original.replace(f"seed: {seed}", f"seed: {seed + 100}"))
    try:
        result = interrupt(["dvc", "repro"], built, signal.SIGINT, mid_way(built, "calibration"))
        assert result.returncode != 0
        assert "the previous outputs are back in place" in result.stderr and CALIBRATION_DIR in result.stderr
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
        assert digest(built / "artifacts" / "calibration") == before
        assert partial_dirs(built) == []
        assert "deleted" not in run(["dvc", "status", "calibration_tensorfile"], built).stdout
    finally:
        params.write_text(original)
    # back to the old value, nothing runs: `validate` (which passed the new one) comes from its run-cache
    assert ran(run(["dvc", "repro"], built).stdout) == []
    assert up_to_date(built)


def test_a_signal_while_a_stage_imports_its_libraries_still_restores_its_outputs(built):
    # run as DVC runs it (DVC_STAGE set, its outputs deleted), interrupted before run_stage starts:
    # the signal is held during the imports, then unwinds like any other
    before = digest(built / "artifacts" / "export")
    moved = built / "artifacts" / ".export.moved-aside"
    (built / "artifacts" / "export").rename(moved)
    try:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "DVC_STAGE": "export"}
        process = subprocess.Popen([sys.executable, "-m", "stages.export", "--params", "params.yaml"], cwd=built,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)  # python is up, onnxruntime and numba are still importing
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 130, err
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert digest(built / "artifacts" / "export") == before
    finally:
        if not (built / "artifacts" / "export").exists():
            moved.rename(built / "artifacts" / "export")
        shutil.rmtree(moved, ignore_errors=True)
    assert up_to_date(built)


def test_a_signal_landing_in_a_weakref_callback_interrupts_without_a_traceback(tmp_path):
    # Python swallows an exception raised in a weakref callback and prints `Exception ignored in ...`
    # (as users saw on their first Ctrl-C): the stage machinery re-delivers the signal instead
    code = (
        "import os, signal, time, weakref\n"
        "from stages.pipeline import outputs\n"
        "outputs.unwind_on_signals()\n"
        "class Thing: pass\n"
        "def callback(_):\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # arrives while the callback runs\n"
        "    sum(range(1000))\n"
        "thing = Thing()\n"
        "ref = weakref.ref(thing, callback)\n"
        "try:\n"
        "    del thing\n"
        "    for _ in range(400):\n"
        "        time.sleep(0.005)\n"
        "    print('not interrupted')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n")
    result = run([sys.executable, "-c", code], Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "interrupted" and result.stderr == ""


def _every_trial_unwinds(trials: int, trial_setup: str, work: str, *args) -> bool:
    """A process with the stages' signal handling that, `trials` times, sets up `trial_setup` (which makes
    `pool`, a ThreadPoolExecutor), runs `work` and sends itself SIGINT or SIGTERM a few ms in; True when every
    trial unwound and the pool shut down, within two minutes."""
    import textwrap
    code = "\n".join([
        "import importlib, os, signal, sys, threading",
        "from concurrent.futures import ThreadPoolExecutor",
        "from stages.pipeline import outputs",
        "outputs.unwind_on_signals()",
        f"for trial in range({trials}):",
        "    outputs._received.clear()",
        textwrap.indent(textwrap.dedent(trial_setup), "    "),
        "    signum = (signal.SIGINT, signal.SIGTERM)[trial % 2]",
        "    timer = threading.Timer(0.001 + (trial % 37) * 0.0003, os.kill, (os.getpid(), signum))",
        "    try:",
        "        timer.start()",
        textwrap.indent(textwrap.dedent(work), "        "),
        "    except KeyboardInterrupt:",
        "        pass",
        "    timer.join()",
        "    pool.shutdown(wait=True)",
        "print('every trial unwound')"])
    result = run([sys.executable, "-c", code, *args], Path(__file__).resolve().parents[1], timeout=120)
    return result.stdout.strip() == "every trial unwound" and result.stderr == ""


def test_a_signal_landing_inside_a_thread_pools_locks_still_unwinds():
    # Raised between a lock's acquire and the `with` that releases it (threading.Condition.__enter__, inside
    # ThreadPoolExecutor.submit), the signal's exception left the lock held: the pool's workers, then its
    # shutdown, waited on it for ever (the export stage, calibrating, hung in CI). The stage machinery raises it
    # in the caller instead, on its next line. Each trial interrupts a loop that is nearly all submit().
    assert _every_trial_unwinds(300, "pool = ThreadPoolExecutor(2)", """
        while True:
            pool.submit(int)""")


def test_a_signal_landing_inside_an_import_another_thread_waits_on_still_unwinds(tmp_path):
    # Raised inside importlib's own Python code, between a module lock's acquire and its release, the signal's
    # exception left the module locked: a worker importing the same module (numba typing an array imports
    # numpy.ma) waited for ever, and so did the pool's shutdown, joining it (seen in the export stage)
    assert _every_trial_unwinds(30, """
        sys.path.insert(0, sys.argv[1])
        names = [f'm{trial}_{index}' for index in range(600)]
        for name in names:
            with open(os.path.join(sys.argv[1], name + '.py'), 'w') as module:
                module.write('x = 1\\n')
        importlib.invalidate_caches()
        pool = ThreadPoolExecutor(1)
        pool.submit(lambda: [importlib.import_module(name) for name in names])""", """
        for name in names:
            importlib.import_module(name)""", tmp_path)
