"""Subprocess and port helpers shared by the local stack: own process group, log file, clean stop."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"


class StartupError(RuntimeError):
    """A local component did not come up; the message carries its log tail."""


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a TCP listener could bind ``host:port`` now (SO_REUSEADDR, as servers do: TIME_WAIT is no obstacle)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel considers free (another process may still take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int, offset: int = 0, host: str = LOOPBACK, attempts: int = 200) -> int:
    """First port of ``count`` consecutive free ports; with ``offset`` the ports ``+offset`` are free too."""
    rng = random.SystemRandom()
    for _ in range(attempts):
        base = rng.randrange(20000, 65535 - offset - count)
        ports = [base + i for i in range(count)] + ([base + i + offset for i in range(count)] if offset else [])
        if all(port_is_free(port, host) for port in ports):
            return base
    raise StartupError(f"no block of {count} free ports (offset {offset}) found on {host}")


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def session_members(sid: int) -> list[int]:
    """Pids whose session id is ``sid`` (Linux /proc; empty elsewhere). Children that moved to their own
    process group (the RIE starts its runtime that way) stay in the session, so this finds them too."""
    members = []
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else []:
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class ManagedProcess:
    """A child in its own session with stdout+stderr in a log file; ``stop`` ends the group, then the session."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start {self.name}: {self.argv[0]}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def failure(self, what: str) -> StartupError:
        """A StartupError naming the component, its exit status and its log tail."""
        status = "" if self.proc is None or self.proc.poll() is None else f" (exit status {self.proc.returncode})"
        return StartupError(f"{self.name}: {what}{status}. Log {self.log_path}, last lines:\n{self.tail()}")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
        """Poll ``ready`` until true; raise with the log tail if the process exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise self.failure(f"exited while waiting until {what}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise self.failure(f"not {what} after {timeout:.0f} s")
            time.sleep(interval)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the whole process group, SIGKILL it after ``grace`` seconds; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # The leader is gone; children of its session (other process groups included) must not survive it.
        for pid in session_members(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class LoopbackServer:
    """A server child on 127.0.0.1: its endpoint, its pid, and ``with server:`` around ``start``/``stop``."""

    _process: ManagedProcess | None = None

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
