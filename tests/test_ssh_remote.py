"""A team shares one real remote over SSH: the fleet workflow, two machines pushing at once, a transfer
that breaks off, and credentials that stay in each machine's .dvc/config.local. One OpenSSH server per
session (tests/ssh_server.py); every machine is a clone in a temp dir, its HOME one that knows the
server's host key."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.commands import ran, run
from helpers.tao import KEY, secrets_in
from ssh_server import SshServer, make_server, unavailable
from stages.pipeline.layout import engine_file

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
DVC = str(Path(sys.executable).parent / "dvc")
A100, T4 = "NVIDIA A100-SXM4-40GB, 8.0", "Tesla T4, 7.5"


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory):
    reason = unavailable()
    if reason:
        if os.environ.get("CI"):  # CI installs it (.ci/run): a skip there would hide the whole story
            pytest.fail(reason)
        pytest.skip(reason)
    server = make_server(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def on(server: SshServer, env: dict | None = None) -> dict:
    """The environment of a machine of the team: a HOME whose known_hosts has the server."""
    return {"HOME": str(server.home), **(env or {})}


TEAM_SETUP = "dvc remote add -d team ssh://deploy@gpu-host.example/srv/dvc-remote   # .dvc/config: the URL, committed"


def join_remote(project: Path, server: SshServer, name: str, add: bool) -> None:
    """README's team setup, run as written but for this server's URL, key and passphrase: on the first
    machine all of it; on the others (add=False) the two `--local` lines with their own key."""
    import shlex

    from test_readme import block
    commands = block(TEAM_SETUP).commands()
    assert [c.split()[:4] for c in commands[:3]] == [["dvc", "remote", "add", "-d"],
                                                     ["dvc", "remote", "modify", "--local"],
                                                     ["dvc", "remote", "modify", "--local"]]
    mine = {"ssh://deploy@gpu-host.example/srv/dvc-remote": server.url(name), "~/.ssh/id_ed25519": str(server.key),
            "'the key passphrase'": shlex.quote(server.passphrase)}
    for command in commands if add else commands[1:3]:
        for theirs, ours in mine.items():
            command = command.replace(theirs, ours)
        run(["bash", "-c", command], project, env=on(server))


def hub(tmp_path: Path) -> Path:
    """The team's git server: a bare repository."""
    bare = tmp_path / "hub.git"
    run(["git", "init", "-q", "--bare", "-b", "main", bare], tmp_path)
    return bare


def clone(source: Path, dest: Path, server: SshServer) -> Path:
    run(["git", "clone", "-q", source, dest], dest.parent)
    run(["git", "config", "user.name", f"{dest.name} machine"], dest)  # each machine's own identity
    run(["git", "config", "user.email", f"{dest.name}@example.invalid"], dest)
    join_remote(dest, server, "", add=False)
    return dest


def secrets_of(server: SshServer) -> list[bytes]:
    private_lines = [line for line in server.key.read_text().splitlines() if line and "PRIVATE KEY" not in line]
    return [str(server.key).encode(), server.passphrase.encode(), *(line.encode() for line in private_lines)]


# ------------------------------------------------------------------------------------------ the fleet

def test_the_fleet_shares_engines_and_experiments_over_ssh(tmp_path, fake_bin, ssh_server):
    from helpers.projects import project_for
    from helpers.tao import env_for

    git_hub = hub(tmp_path)
    first = project_for(tmp_path, "tao")
    join_remote(first, ssh_server, "fleet", add=True)  # commits .dvc/config
    assert run(["git", "check-ignore", ".dvc/config.local"], first).stdout.strip() == ".dvc/config.local"
    run([*GIT, "add", "-A"], first)
    run([*GIT, "commit", "-qm", "a TAO project"], first)
    on_a100 = on(ssh_server, env_for(fake_bin, tmp_path, FAKE_GPUS=A100, FAKE_TAO_RECORD=str(tmp_path / "a.jsonl")))
    assert "convert" in ran(run(["dvc", "repro"], first, env=on_a100).stdout)
    run([*GIT, "add", "-A"], first)
    run([*GIT, "commit", "-qm", "built on an A100"], first)
    run(["dvc", "push", "--run-cache"], first, env=on_a100)
    run(["git", "push", "-q", git_hub, "HEAD:main"], first)
    a100_engine = (first / engine_file("tao", "tensorrt")).read_bytes()

    # a T4 clones, pulls outputs and run-cache, and rebuilds only what depends on the platform
    second = clone(git_hub, tmp_path / "second", ssh_server)
    on_t4 = on(ssh_server, env_for(fake_bin, tmp_path, FAKE_GPUS=T4, FAKE_TAO_RECORD=str(tmp_path / "t4.jsonl")))
    run(["dvc", "pull", "--run-cache"], second, env=on_t4)
    assert ran(run(["dvc", "repro", "--pull"], second, env=on_t4).stdout) == ["convert", "evaluate", "metrics",
                                                                                "triton"]
    assert "Tesla T4 (7.5)" in json.loads((second / "metrics/convert.json").read_text())["platform"]
    run([*GIT, "add", "-A"], second)
    run([*GIT, "commit", "-qm", "built on a T4"], second)
    run(["dvc", "push", "--run-cache"], second, env=on_t4)
    run(["git", "push", "-q", "origin", "HEAD:main"], second)

    # a third machine, an A100, restores the A100's engine from the run-cache: no tool runs
    third = clone(git_hub, tmp_path / "third", ssh_server)
    run(["dvc", "pull", "--run-cache"], third, env=on_a100)
    again = run(["dvc", "repro", "--pull"], third, env={**on_a100, "FAKE_TAO_RECORD": str(tmp_path / "third.jsonl")})
    assert ran(again.stdout) == []
    for stage in ("convert", "evaluate", "metrics", "triton"):  # metrics: the run-cache keeps its copy
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in again.stdout
    assert not (tmp_path / "third.jsonl").exists(), "a TAO tool ran"
    assert (third / engine_file("tao", "tensorrt")).read_bytes() == a100_engine

    # an experiment made on the first machine reaches the third through `dvc exp push` / `dvc exp pull`
    run(["git", "remote", "add", "origin", git_hub], first)
    run(["git", "fetch", "-q", "origin"], first)
    made = run(["dvc", "exp", "run", "-n", "bigger-workspace", "-S", "convert.workspace_mib=2048"], first, env=on_a100)
    assert "convert" in ran(made.stdout)
    run(["dvc", "exp", "push", "origin", "bigger-workspace"], first, env=on_a100)
    run(["dvc", "exp", "pull", "origin", "bigger-workspace"], third, env=on_a100)
    shown = json.loads(run(["dvc", "exp", "show", "--all-commits", "--json"], third, env=on_a100).stdout)
    names = [exp.get("name") for commit in shown for exp in commit.get("experiments") or []]
    assert "bigger-workspace" in names
    run(["dvc", "exp", "apply", "bigger-workspace"], third, env=on_a100)
    assert json.loads((third / "artifacts/params/convert.json").read_text())["convert.workspace_mib"] == 2048
    engine = engine_file("tao", "tensorrt")
    assert (third / engine).read_bytes() == (first / engine).read_bytes()

    # credentials: only in each machine's .dvc/config.local, nowhere else after all that
    for machine in (first, second, third):
        assert secrets_in(machine, [*secrets_of(ssh_server), KEY.encode()]) == [], machine.name
    assert str(ssh_server.key) not in (first / ".dvc/config").read_text()
    assert ssh_server.url("fleet") in (first / ".dvc/config").read_text()


# ------------------------------------------------------------------------------ concurrency and failure

def tracked_data(project: Path, name: str, files: int, size: int, seed: int) -> dict[str, str]:
    """`dvc add` a folder of random files; returns {relative path: md5}."""
    import random
    folder = project / name
    folder.mkdir()
    rng = random.Random(seed)
    digests = {}
    for index in range(files):
        data = rng.randbytes(size)
        (folder / f"{index:04}.bin").write_bytes(data)
        digests[f"{name}/{index:04}.bin"] = hashlib.md5(data).hexdigest()
    run(["dvc", "add", "-q", name], project)
    return digests


def data_repo(tmp_path: Path, server: SshServer, remote: str) -> tuple[Path, Path]:
    git_hub = hub(tmp_path)
    origin = tmp_path / "origin"
    origin.mkdir()
    run(["git", "init", "-q"], origin)
    run(["dvc", "init", "-q"], origin)
    run(["git", "config", "user.name", "origin machine"], origin)
    run(["git", "config", "user.email", "origin@example.invalid"], origin)
    join_remote(origin, server, remote, add=True)
    assert run(["git", "status", "--porcelain"], origin).stdout == ""  # `dvc init` staged its files: committed
    run(["git", "push", "-q", git_hub, "HEAD:main"], origin)
    return git_hub, origin


def every_object_is_whole(server: SshServer, remote: str) -> int:
    """Each object on the remote holds the bytes its name (their MD5) says; returns how many there are."""
    count = 0
    for path in (server.remote_path(remote) / "files" / "md5").rglob("*"):
        if path.is_file() and not path.name.endswith(".dir"):
            assert hashlib.md5(path.read_bytes()).hexdigest() == path.parent.name + path.name, path
            count += 1
    return count


def test_two_machines_push_at_once_and_both_arrive_whole(tmp_path, ssh_server):
    git_hub, _ = data_repo(tmp_path, ssh_server, "concurrent")
    machines, expected = [], {}
    for number in (1, 2):
        machine = clone(git_hub, tmp_path / f"machine{number}", ssh_server)
        expected[number] = tracked_data(machine, f"data{number}", files=120, size=20_000, seed=number)
        run([*GIT, "add", "-A"], machine)
        run([*GIT, "commit", "-qm", f"data of machine {number}"], machine)
        run(["git", "push", "-q", "origin", f"HEAD:machine{number}"], machine)
        machines.append(machine)
    env = {**os.environ, **on(ssh_server), "DVC_NO_ANALYTICS": "1"}
    pushes = [subprocess.Popen([DVC, "push"], cwd=m, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for m in machines]
    outputs = [p.communicate(timeout=600)[0] for p in pushes]
    assert [p.returncode for p in pushes] == [0, 0], outputs
    assert every_object_is_whole(ssh_server, "concurrent") == 240

    third = clone(git_hub, tmp_path / "third", ssh_server)
    for number in (1, 2):
        run(["git", "checkout", "-q", f"origin/machine{number}"], third)
        run(["dvc", "pull"], third, env=on(ssh_server))
        for path, digest in expected[number].items():
            assert hashlib.md5((third / path).read_bytes()).hexdigest() == digest, path


def test_a_push_the_server_breaks_off_fails_and_the_next_completes(tmp_path, ssh_server):
    git_hub, origin = data_repo(tmp_path, ssh_server, "broken")
    expected = tracked_data(origin, "data", files=300, size=200_000, seed=7)
    run([*GIT, "add", "-A"], origin)
    run([*GIT, "commit", "-qm", "data"], origin)
    run(["git", "push", "-q", git_hub, "HEAD:main"], origin)
    env = {**os.environ, **on(ssh_server), "DVC_NO_ANALYTICS": "1"}
    push = subprocess.Popen([DVC, "push", "-j", "2"], cwd=origin, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        objects = ssh_server.remote_path("broken") / "files" / "md5"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(objects.rglob("*"))) < 20:
            time.sleep(0.05)  # some of it arrived: now the server goes away
        ssh_server.stop()
        said = push.communicate(timeout=300)[0]
    finally:
        if ssh_server.process is None:
            ssh_server.start()
    assert push.returncode != 0, said
    # DVC says why (an ERROR line) when asyncssh reports the broken connection; in 2 of 6 fresh-clone runs
    # it exited non-zero having said nothing at all (the cut landed mid-write): the exit is what scripts read
    assert "ERROR" in said or not said.strip(), (push.returncode, said)
    arrived = every_object_is_whole(ssh_server, "broken")  # no object under its name with other bytes
    assert arrived < len(expected)

    run(["dvc", "push"], origin, env=on(ssh_server))
    assert every_object_is_whole(ssh_server, "broken") == len(expected)
    third = clone(git_hub, tmp_path / "third", ssh_server)
    run(["dvc", "pull"], third, env=on(ssh_server))
    for path, digest in expected.items():
        assert hashlib.md5((third / path).read_bytes()).hexdigest() == digest, path
