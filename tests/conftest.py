"""Shared fixtures: one local Spark session, a farmwatch home, and real servers on loopback.

The Spark session is ``local[2]`` with few shuffle partitions and the UI off; its checkpoint
folder lives under pytest's temporary directory. Farmwatch's state (lake, runs, MLflow, bucket)
for tests that need it goes under ``tmp_path`` via the ``farmwatch_home`` fixture. ``s3_server``
starts moto's standalone S3 server as a separate process on a free loopback port, waits until
it answers, and always stops it; it can be killed and restarted with its objects intact (moto's
request journal is replayed into the new process), which is how the fault tests simulate an S3
endpoint dying in the middle of a publish. ``webhook`` is a loopback HTTP endpoint that keeps
the JSON bodies POSTed to it, for the flows' notifications.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from jobs.core.config import SparkSettings
from jobs.core.session import JVM_PACKAGES, build_session


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    settings = SparkSettings(
        master="local[2]", shuffle_partitions=2, driver_memory="3g", app_name="farmwatch-tests"
    )
    session = build_session(settings, tmp_path_factory.mktemp("checkpoints"))
    yield session
    session.stop()


@pytest.fixture
def farmwatch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every farmwatch path (lake, runs, MLflow, bucket, Prefect) at a temp folder."""
    home = tmp_path / "farmwatch"
    home.mkdir()
    monkeypatch.setenv("FARMWATCH_LAKE__HOME", str(home))
    monkeypatch.delenv("FARMWATCH_CONFIG", raising=False)
    return home


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def loopback_port() -> int:
    """A free loopback port for a server the test starts itself."""
    return free_port()


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers (any HTTP status) or fail with the server's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


class LoopbackServer:
    """A server run as a child process on a free loopback port: launch, wait, always stop."""

    stop_grace_seconds = 30.0

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def launch(
        self,
        command: list[str],
        log: Path,
        ready_url: str,
        env: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        """Start ``command`` (output appended to ``log``) and wait until ``ready_url`` answers."""
        with log.open("a") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for_http(ready_url, self.process, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """Terminate the server (kill if it does not exit within the grace period)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.stop_grace_seconds)
            except subprocess.TimeoutExpired:
                self.kill()


def _executable(name: str) -> str:
    """A console script installed beside this interpreter."""
    return str(Path(sys.executable).parent / name)


class MotoS3Server(LoopbackServer):
    """moto's standalone server (``moto_server``) as a child process on loopback."""

    stop_grace_seconds = 10.0

    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}"
        self.journal = workdir / "moto-journal.jsonl"
        self.log = workdir / "moto.log"

    def start(self) -> None:
        """Start the server (recording every request to the journal) and wait for it."""
        env = {
            **os.environ,
            "MOTO_ENABLE_RECORDING": "1",
            "MOTO_RECORDER_FILEPATH": str(self.journal),
        }
        self.launch(
            [_executable("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            self.log,
            f"{self.url}/moto-api/",
            env=env,
        )

    def restart(self) -> None:
        """Start a new process on the same port and replay the journal into it."""
        self.kill()
        if self.journal.exists():  # a request cut off by the kill leaves a partial last line
            lines = self.journal.read_text().splitlines()
            while lines:
                try:
                    json.loads(lines[-1])
                    break
                except json.JSONDecodeError:
                    lines.pop()
            self.journal.write_text("".join(f"{line}\n" for line in lines))
        self.start()
        self.admin("recorder/replay-recording")

    def admin(self, path: str, body: bytes = b"") -> None:
        """POST to moto's admin API (``/moto-api/<path>``)."""
        request = urllib.request.Request(
            f"{self.url}/moto-api/{path}",
            data=body,
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=30)


@pytest.fixture
def s3_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3Server]:
    """A fresh S3-protocol server with test credentials in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "farmwatch-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "farmwatch-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    workdir = tmp_path / "moto"
    workdir.mkdir()
    server = MotoS3Server(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class MlflowServer(LoopbackServer):
    """``mlflow server`` with a SQLite backend and a local artifact root, on loopback."""

    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir

    def start(self) -> None:
        """Start the server and wait until ``/health`` answers."""
        command = [
            _executable("mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--artifacts-destination",
            (self.workdir / "artifacts").as_uri(),
        ]
        self.launch(command, self.workdir / "server.log", f"{self.url}/health", timeout=120)


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A real MLflow tracking server for the test, stopped afterwards."""
    workdir = tmp_path / "mlflow-server"
    workdir.mkdir()
    server = MlflowServer(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


CLUSTER_SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "spark-local-cluster.sh"


class Webhook:
    """A loopback HTTP endpoint that records the JSON body of every POST (``received``)."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        received = self.received

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = HTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening (later POSTs fail to connect); safe to call twice."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.stop()


def wait_for_log(path: Path, text: str, count: int = 1, timeout: float = 120.0) -> None:
    """Wait until ``text`` appears ``count`` times in a log file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.5)
    tail = path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"
    raise TimeoutError(f"{text!r} x{count} not in {path} after {timeout:.0f}s:\n{tail}")


def _cluster_script(state: Path, *args: str) -> None:
    env = {**os.environ, "FARMWATCH_SPARK_STATE": str(state), "PYTHON": sys.executable}
    subprocess.run(["bash", str(CLUSTER_SCRIPT), *args], env=env, check=True, timeout=120)


@pytest.fixture
def spark_cluster(tmp_path: Path) -> Iterator[str]:
    """A Spark standalone master and one 2-core worker on loopback (infra script)."""
    state = tmp_path / "spark-cluster"
    port = free_port()
    try:
        _cluster_script(state, "start-cluster", str(port), "1", "2", "3g")
        wait_for_log(state / "master.log", "Registering worker", count=1)
        yield f"spark://127.0.0.1:{port}"
    finally:
        _cluster_script(state, "stop-cluster")


@pytest.fixture
def spark_connect_server(
    spark_cluster: str, s3_server: MotoS3Server, tmp_path: Path
) -> Iterator[str]:
    """A Spark Connect server on loopback whose jobs run on the standalone cluster above, with
    the ``s3a`` package and the S3 server above as its ``s3a://`` endpoint (a Connect server
    loads its own packages and settings; the client's ``spark.packages`` do not apply)."""
    state = tmp_path / "spark-connect"
    port = free_port()
    s3a = {
        "endpoint": s3_server.url,
        "endpoint.region": "us-east-1",
        "path.style.access": "true",
        "connection.ssl.enabled": "false",
        "access.key": os.environ["AWS_ACCESS_KEY_ID"],
        "secret.key": os.environ["AWS_SECRET_ACCESS_KEY"],
    }
    options = ["--packages", ",".join(JVM_PACKAGES["s3a"].coordinates)]
    for key, value in s3a.items():
        options += ["--conf", f"spark.hadoop.fs.s3a.{key}={value}"]
    # every part file is a few requests to moto: one rename per file
    options += ["--conf", "spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version=2"]
    try:
        _cluster_script(state, "start-connect", str(port), spark_cluster, *options)
        wait_for_log(state / "connect.log", "Spark Connect server started")
        yield f"sc://127.0.0.1:{port}"
    finally:
        _cluster_script(state, "stop-connect")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
