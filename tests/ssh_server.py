"""A real OpenSSH server on 127.0.0.1 for the fleet tests: Debian's `sshd` with a host key and a user key
made for the session (the user key locked by a passphrase), stopped whatever happens. Teams share a DVC
remote over SSH; a local directory cannot show authentication, a server that goes away mid-transfer,
or where credentials end up."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from stages.serving.server import free_port

SSHD = "/usr/sbin/sshd"
HOW_TO_INSTALL = ("needs OpenSSH's sshd, run as root (it switches to the logged-in user): "
                  "`apt-get install openssh-server`, as .ci/run does")


def unavailable() -> str | None:
    """Why no server can be started here, or None."""
    if not Path(SSHD).is_file():
        return f"{SSHD} is not installed: {HOW_TO_INSTALL}"
    if os.geteuid() != 0:
        return f"not root: {HOW_TO_INSTALL}"
    return None


@dataclass
class SshServer:
    folder: Path  # its config, keys and log; the remotes live under folder/remotes
    port: int
    user: str
    key: Path  # the user's private key, locked by `passphrase`
    passphrase: str
    home: Path  # a HOME for clients: .ssh/known_hosts names this server's host key
    process: subprocess.Popen | None = None

    def url(self, name: str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{self.folder / 'remotes' / name}"

    def remote_path(self, name: str) -> Path:
        return self.folder / "remotes" / name

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation directory
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")],
                                        stdout=subprocess.DEVNULL, stderr=open(self.folder / "sshd.log", "a"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited {self.process.returncode}: {(self.folder / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not listen within 20 s")

    def stop(self) -> None:
        """Stop the server and every session it forked (a transfer in progress breaks off)."""
        if self.process is not None:
            subprocess.run(["pkill", "-KILL", "-f", f"sshd: {self.user}@"], check=False)
            self.process.kill()
            self.process.wait(timeout=20)
            self.process = None


def make_server(folder: Path) -> SshServer:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "remotes").mkdir(exist_ok=True)
    for name in ("host_key", "user_key"):
        (folder / name).unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host_key")], check=True)
    passphrase = "fleet-Passphrase-7f3a9c"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "fleet test key", "-f",
                    str(folder / "user_key")], check=True)
    shutil.copy(folder / "user_key.pub", folder / "authorized_keys")
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nSubsystem sftp internal-sftp\nMaxStartups 50\n"
        "MaxSessions 50\n")
    home = folder / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    host_key = (folder / "host_key.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    return SshServer(folder, port, user, folder / "user_key", passphrase, home)
