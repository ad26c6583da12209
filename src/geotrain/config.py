"""Settings, read from ``GEOTRAIN_*`` environment variables and a ``.env`` file."""

from __future__ import annotations

import json
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_FILE_SHARE = "/fileShares/geotrain"


def store_prefix(prefix: str) -> str:
    """A data-store prefix as it is matched: forward slashes, one leading, none trailing."""
    return "/" + prefix.replace("\\", "/").strip("/")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GEOTRAIN_", env_file=".env", extra="ignore")

    home: Path = Path(".geotrain")
    database_url: str = ""
    # data-store path prefix -> local directory, e.g. {"/fileShares/chips": "/srv/chips"}
    data_stores: dict[str, Path] = Field(default_factory=dict)

    # none: one anonymous user; token: users kept here (`geotrain user add`), tokens from this server's
    # generateToken; portal: tokens of the ArcGIS portal at portal_url, checked with it
    auth: Literal["none", "token", "portal"] = "none"
    portal_url: str = ""
    # minutes a token lasts when generateToken is not told (ArcGIS's short-lived default)
    token_minutes: int = 60
    # signs OAuth sign-in states and codes; every API process of one server needs the same key. Empty: a
    # key made once and kept in GEOTRAIN_HOME/secret.key
    secret_key: str = ""
    # With portal_url set, {"name": ...} outputs become items of that ArcGIS portal (else of the embedded
    # one), added with these credentials, or with the submitter's own token where none are given
    # (GEOTRAIN_AUTH=portal gives one)
    portal_username: str = ""
    portal_password: str = ""
    # TLS verification when geotrain calls that portal (false for a self-signed certificate)
    portal_verify: bool = True

    # what this host's workers can run: "gpu", "cpu" (empty: "cpu", and "gpu" where a GPU is visible);
    # a job with context processorType GPU or CPU goes only to a worker with that label
    worker_labels: str = ""
    # the GPUs a worker's training processes may use, e.g. "0,1" (CUDA_VISIBLE_DEVICES); "none": no GPU;
    # empty: every GPU the host has
    gpus: str = ""

    # days a finished job's working folder (checkpoints, train.log) is kept; 0: kept for ever. Published
    # packages are never removed.
    retention_days: float = 0.0

    # how every geotrain process logs: "text", or "json" (one object a line, with the job id on a job's lines)
    log_format: Literal["text", "json"] = "text"

    lease_seconds: float = 60.0
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 0.5
    max_attempts: int = 3
    # Seconds a training process gets to exit after SIGTERM before it is killed.
    kill_grace_seconds: float = 5.0
    # Seconds a training process gets to checkpoint and exit when its worker stops (SIGTERM to the worker).
    handback_seconds: float = 120.0
    # Before a job succeeds, run its package's own inference function in a fresh interpreter, as ArcGIS
    # would (a few seconds a job, mostly importing torch). Off only where many tiny jobs make that dominate.
    check_packages: bool = True

    @field_validator("data_stores", mode="before")
    @classmethod
    def _parse_stores(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @cached_property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'geotrain.db'}"

    @cached_property
    def stores(self) -> dict[str, Path]:
        """Every registered data store, the default file share included."""
        stores = {DEFAULT_FILE_SHARE: self.home / "fileshare"}
        for prefix, root in self.data_stores.items():
            stores[store_prefix(prefix)] = Path(root).expanduser().resolve()
        return stores

    def restricted_to(self, granted: tuple[str, ...]) -> Settings:
        """These settings with only the ``granted`` data stores registered (and the default file share,
        where every user's packages go)."""
        wanted = {store_prefix(g) for g in granted}
        kept = {k: v for k, v in self.data_stores.items() if store_prefix(k) in wanted}
        return Settings.model_construct(**{**self.model_dump(), "data_stores": kept})

    @property
    def items_dir(self) -> Path:
        return self.home / "items"

    def signing_key(self) -> bytes:
        if self.secret_key:
            return self.secret_key.encode()
        path = self.home / "secret.key"
        if not path.exists():
            # written aside and linked into place, so concurrent first starts agree on one key
            path.parent.mkdir(parents=True, exist_ok=True)
            aside = path.with_name(f".secret.{os.getpid()}")
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            finally:
                aside.unlink()
        return path.read_text().strip().encode()

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    def child_environment(self) -> dict[str, str]:
        """What a training process needs to see the same database and stores as its worker, and only the
        GPUs its worker was given."""
        env = {
            "GEOTRAIN_HOME": str(self.home),
            "GEOTRAIN_DATABASE_URL": self.effective_database_url,
            "GEOTRAIN_DATA_STORES": json.dumps({k: str(v) for k, v in self.data_stores.items()}),
            "GEOTRAIN_LOG_FORMAT": self.log_format,
            # progress bars (Lightning's rate finder draws one) are noise in a log file, and not JSON
            "TQDM_DISABLE": "1",
        }
        if self.gpus.strip():
            env["CUDA_VISIBLE_DEVICES"] = "" if self.gpus.strip().lower() == "none" else self.gpus.strip()
        return env

    def gpu_ids(self) -> set[int] | None:
        """The GPU numbers ``gpus`` names (None: every GPU the host has; empty: none)."""
        chosen = self.gpus.strip().lower()
        if not chosen:
            return None
        return {int(p) for p in chosen.split(",") if p.strip().isdigit()}

    def visible_gpus(self) -> int:
        """How many GPUs this host's workers may use: those named in ``gpus``, or those the NVIDIA driver
        lists (read without importing torch: an idle worker stays small)."""
        chosen = self.gpus.strip().lower() or os.environ.get("CUDA_VISIBLE_DEVICES", "").strip().lower()
        if chosen == "none" or ("CUDA_VISIBLE_DEVICES" in os.environ and not chosen):
            return 0
        driver = Path("/proc/driver/nvidia/gpus")
        present = len(list(driver.iterdir())) if driver.is_dir() else 0
        return min(present, len([g for g in chosen.split(",") if g.strip()])) if chosen else present

    def labels(self) -> frozenset[str]:
        given = {label.strip().lower() for label in self.worker_labels.split(",") if label.strip()}
        return frozenset(given or {"cpu", *(["gpu"] if self.visible_gpus() else [])})

    def ensure_dirs(self) -> None:
        for path in (self.home, self.jobs_dir, self.stores[DEFAULT_FILE_SHARE]):
            path.mkdir(parents=True, exist_ok=True)
