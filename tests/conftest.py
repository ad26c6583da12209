"""Shared fixtures: export folders, a real server in a subprocess, a real PostgreSQL database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.exports import ExportSpec, write_classified_tiles

TASK = "/arcgis/rest/services/System/RasterAnalysisTools/GPServer/TrainDeepLearningModel"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Tests see an empty weight cache unless they plant one: a machine's own ImageNet files must not
    change what they assert."""
    import tempfile

    os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="geotrain-torch-home-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """``geotrain serve`` in its own process, as users run it."""

    home: Path
    stores: dict[str, str]
    database_url: str = ""
    workers: int = 1
    log_level: str = "warning"
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # (certificate, key): serve HTTPS, as the arcgis client insists on
    tls: tuple[Path, Path] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "GEOTRAIN_HOME": str(self.home),
            "GEOTRAIN_DATA_STORES": json.dumps(self.stores),
            "GEOTRAIN_HEARTBEAT_SECONDS": "0.5",
            "GEOTRAIN_POLL_SECONDS": "0.2",
            "GEOTRAIN_KILL_GRACE_SECONDS": "2",
            # The package check (an interpreter importing torch after each job, seconds a job) is tested where
            # a test asks for it (tests/integration/test_inference_function.py, test_detector_function.py,
            # test_train_shapes.py); the many small jobs of the servers here would spend minutes on it.
            "GEOTRAIN_CHECK_PACKAGES": "false",
            **self.extra_env,
        }
        if self.database_url:
            env["GEOTRAIN_DATABASE_URL"] = self.database_url
        return env

    def start(self) -> Server:
        log = open(self.home.parent / f"server-{self.port}.log", "wb")  # noqa: SIM115 - lives as long as the server
        tls = ["--ssl-certfile", str(self.tls[0]), "--ssl-keyfile", str(self.tls[1])] if self.tls else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "geotrain.cli", "--log-level", self.log_level, "serve", "--port", str(self.port),
             "--workers", str(self.workers), *tls],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {(self.home.parent / f'server-{self.port}.log').read_text()}")
            try:
                if httpx.get(self.url + TASK + "?f=json", timeout=2, verify=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    @property
    def log(self) -> Path:
        """Where the server's output goes."""
        return self.home.parent / f"server-{self.port}.log"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def in_share(name: str) -> dict[str, str]:
    """An output_name in the server's own file share: the package lands at
    ``$GEOTRAIN_HOME/fileshare/models/<name>/<name>.dlpk`` (a plain name would make a portal item)."""
    return {"uri": f"/fileShares/geotrain/models/{name}"}


def in_share_json(name: str) -> str:
    return json.dumps(in_share(name))


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 and localhost, made the way README tells users to make one."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def arcgis_form(**values: Any) -> dict[str, str]:
    """The body the arcgis client posts: every input, "" for unset, JSON for dicts, lower-case booleans."""
    names = [
        "in_folder", "output_name", "model_type", "arguments", "batch_size", "max_epochs", "learning_rate",
        "backbone_model", "validation_percent", "pretrained_model", "stop_training", "freeze_model",
        "overwrite_model", "context", "data_augmentation", "augmentation_parameters", "chip_size", "resize_to",
        "weight_init_scheme", "monitor",
    ]  # fmt: skip
    form = {"f": "json"}
    for name in names:
        value = values.get(name)
        if value is None:
            form[name] = ""
        elif isinstance(value, dict | list | bool):
            form[name] = json.dumps(value)
        else:
            form[name] = str(value)
    return form


def wait_for(client: httpx.Client, job_url: str, timeout: float = 240, until: tuple[str, ...] = ()) -> dict[str, Any]:
    """Poll a job like a client does until it finishes (or reaches one of ``until``)."""
    finished = ("esriJobSucceeded", "esriJobFailed", "esriJobCancelled", "esriJobTimedOut", *until)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(job_url, params={"f": "json"}).json()
        if job.get("jobStatus") in finished:
            return job
        time.sleep(0.25)
    raise AssertionError(f"job did not finish in {timeout}s: {job}")


def succeeded_package(client: httpx.Client, server: Server, job_id: str, folder: Path) -> tuple[Path, dict[str, Any]]:
    """The job, waited for until it succeeds; its .dlpk downloaded from its page's link into ``folder``, and its
    EMD."""
    job = wait_for(client, f"{server.url}{TASK}/jobs/{job_id}")
    assert job["jobStatus"] == "esriJobSucceeded", job["messages"]
    path = folder / f"{job_id}.dlpk"
    path.write_bytes(client.get(f"{server.url}{TASK}/jobs/{job_id}/package").content)
    with zipfile.ZipFile(path) as zf:
        (emd_name,) = [n for n in zf.namelist() if n.endswith(".emd")]
        emd: dict[str, Any] = json.loads(zf.read(emd_name))
        assert {"ModelCharacteristics/loss_graph.png", "ModelCharacteristics/show_results.png"} <= set(zf.namelist())
    return path, emd


@pytest.fixture(scope="session")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file-share data store with a few exports in it."""
    root = tmp_path_factory.mktemp("stores") / "chips"
    write_classified_tiles(root / "uint16_4band", ExportSpec())
    write_classified_tiles(
        root / "rgb8",
        ExportSpec(bands=3, dtype="uint8", values=(1, 2), absent=None, digits=9, compress=None, placeholder_emd=False),
    )
    return root


RESNET34_FILE = "resnet34-b627a593.pth"  # torchvision's file name for its ImageNet resnet34 weights


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weight cache holding resnet34 only. The real ImageNet file cannot be downloaded here, so it holds
    torchvision's resnet34 in its initial state under the real file name: the loading path is the same."""
    import torch
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet34().state_dict(), home / "hub" / "checkpoints" / RESNET34_FILE)
    return home


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, store_root: Path, torch_home: Path) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home") / "geotrain"
    stores = {"/fileShares/chips": str(store_root)}
    if SHARED_DATA.is_dir():
        stores["/fileShares/real"] = str(SHARED_DATA)  # the real third-party exports, read in place
    # JSON logs at level info: every e2e job runs under them, and tests read its lines (tests/e2e/test_distributed.py)
    srv = Server(home=home, stores=stores, log_level="info",
                 extra_env={"TORCH_HOME": str(torch_home), "GEOTRAIN_LOG_FORMAT": "json"})  # fmt: skip
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def _postgres_up() -> None:
    import psycopg

    try:
        psycopg.connect("host=127.0.0.1 user=postgres dbname=test", connect_timeout=3).close()
    except psycopg.OperationalError:
        # The brief: start it rather than skip.
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True)
        time.sleep(2)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    import psycopg

    _postgres_up()
    name = f"geotrain_{uuid.uuid4().hex[:12]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
