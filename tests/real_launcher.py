"""The TAO launcher's own code (nvidia-tao, installed by `make setup`), run as `tao` by the tests.

Only the calls to the docker engine are replaced, as there is none here: the image counts as
pulled, and starting the container records what the launcher would start it with. Everything else
is the launcher's: task routing from its config, the mounts file named by LAUNCHER_MOUNTS, its
DockerOptions checks, the command line it joins and the host shell that runs `docker exec` (the
`docker` on PATH, which the tests make a fake that runs the fake TAO tools)."""
import json
import os
import sys
import types
from pathlib import Path

from nvidia_tao_cli.components.docker_handler import docker_handler
from nvidia_tao_cli.components.instance_handler import local_instance
from nvidia_tao_cli.entrypoint import tao_launcher

from fake_tao import record  # this file's directory is on sys.path, as it is for fake_tao


class DaemonlessDockerHandler(docker_handler.DockerHandler):
    def __init__(self, docker_registry=None, image_name=None, docker_tag=None, docker_digest=None,
                 docker_mount_file=docker_handler.DOCKER_MOUNT_FILE, docker_env_path=None):
        # the launcher's own __init__, less the docker client (it connects to the engine)
        self._docker_registry, self._image_name = docker_registry, image_name
        self._docker_tag, self._docker_digest = docker_tag, docker_digest
        self._docker_mount_file = os.path.expanduser(docker_mount_file)
        self.docker_exec_command = "docker exec"
        self.initialized = True
        self._container = None

    def _check_image_exists(self):
        return True

    def start_container(self, volumes, env_vars, docker_options=None):
        options = self.get_docker_option_args(docker_options)  # the launcher's own checks
        record("tao-container", image=self.docker_image, volumes=volumes, container_env=env_vars,
               options={k: v for k, v in options.items() if k != "ulimits"})
        self._container = types.SimpleNamespace(id="tao-container")

    def stop_container(self):
        self._container = None


def main() -> int:
    mounts = os.environ.get("LAUNCHER_MOUNTS")
    record("tao", sys.argv[1:], mounts=json.loads(Path(mounts).read_text()) if mounts else None)
    local_instance.DockerHandler = DaemonlessDockerHandler
    os.environ.setdefault("OVERRIDE_REGISTRY", "nvcr.io")  # the launcher's switch to skip its `docker login` check
    tao_launcher.main(sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
