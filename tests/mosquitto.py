"""A private Mosquitto for tests and benchmarks: own port, own config, persistence in a temp dir.

No pytest here so that `bench/` can use it too; `conftest.py` turns `MosquittoUnavailable` into a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class MosquittoUnavailable(RuntimeError):
    """No mosquitto binary on this machine (`make mosquitto` installs it)."""


def find_binary() -> str:
    """Path of the mosquitto binary, or raise MosquittoUnavailable."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if found is None:
        raise MosquittoUnavailable("mosquitto not found on PATH or at /usr/sbin/mosquitto (run `make mosquitto`)")
    return found


def broker_user() -> tuple[int, int] | None:
    """(uid, gid) of the `mosquitto` user a root-started broker drops to; None when not root (no drop)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pw = pwd.getpwnam("mosquitto")
    except KeyError:
        return None  # no such user: Mosquitto keeps running as root, and everything is readable
    return pw.pw_uid, pw.pw_gid


def give_to_broker(path: Path) -> None:
    """Make a directory of ours usable by the broker after its privilege drop: owned by `mosquitto`, 0755."""
    ids = broker_user()
    if ids is not None:
        os.chown(path, *ids)
    os.chmod(path, 0o755)


def share_with_broker(path: Path) -> None:
    """A file the broker reads after dropping privileges (a key: group `mosquitto`, 0640), as deployed."""
    ids = broker_user()
    if ids is not None:
        os.chown(path, 0, ids[1])
    os.chmod(path, 0o640)


def broker_dir(prefix: str = "fedrank-broker-") -> Path:
    """A new temp directory that a broker dropped to user `mosquitto` can read (pytest's tmp dirs are 0700)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One broker process; `restart()` keeps the port and the persistence directory.

    Args:
        extra_conf: lines appended to the config (e.g. `allow_anonymous false`).
        workdir: where config, persistence and log go (a new temp dir by default, removed by `cleanup`).
        anonymous: `allow_anonymous`; False with no password file refuses everyone (CONNACK 135).
        port: the loopback port (a free one by default).
        conf: run this configuration file as it is (e.g. `fedrank broker-config` output) instead of writing one;
            it must listen on `port`.
    """

    def __init__(self, extra_conf: str = "", workdir: Path | None = None, anonymous: bool = True,
                 port: int | None = None, conf: Path | None = None) -> None:
        self.binary = find_binary()
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="fedrank-mosq-")) if workdir is None else workdir
        self.port = port or free_port()
        self.db = self.dir / "mosquitto.db"
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"allow_anonymous {'true' if anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "autosave_interval 1\n"  # with `persistence`, also saved on SIGTERM
            "max_queued_messages 10000\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            + extra_conf
            + "\n"
        )
        give_to_broker(self.dir)  # started as root, Mosquitto drops to user `mosquitto`, as in production
        self._stderr_log: Path | None = None
        if conf is not None:  # it may log to stderr (the generated one does): to a file, never an unread pipe
            self.conf = conf
            self._stderr_log = self.dir / "mosquitto.stderr.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return self
        self._proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE if self._stderr_log is None
                                      else open(self._stderr_log, "ab"))  # noqa: SIM115 - the child holds it
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read().decode(errors="replace") if self._proc.stderr
                       else self._stderr_log.read_text(errors="replace")[-2000:] if self._stderr_log else "")
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {err.strip()} ({self.log})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not open port {self.port} within {timeout}s")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Mosquitto saves its persistence file) and wait for exit."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._close_pipes()

    def kill(self) -> None:
        """SIGKILL: no goodbye, no final save (only what autosave wrote survives)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close_pipes()

    def pause(self) -> None:
        """SIGSTOP: a hung broker (connections stay open, nothing is answered)."""
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> Mosquitto:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop and remove the temp directory (if we made it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _close_pipes(self) -> None:
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
