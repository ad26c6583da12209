"""A disk that fills up while the package is written fails the job with a message that says so, and leaves
no half-written .dlpk behind."""

from __future__ import annotations

import errno
import zipfile
from pathlib import Path
from typing import Any

import pytest

from geotrain.config import Settings
from geotrain.errors import TrainingError
from geotrain.task import submission
from geotrain.task.params import parse
from geotrain.training.run import Progress, train
from tests.conftest import in_share_json
from tests.exports import ExportSpec, write_classified_tiles


def test_a_full_disk_while_packaging_fails_the_job_and_leaves_no_partial_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_classified_tiles(tmp_path / "chips" / "few", ExportSpec(chips=4, absent=None))
    settings = Settings(home=tmp_path / "home", data_stores={"/fileShares/c": tmp_path / "chips"}, check_packages=False)
    settings.ensure_dirs()
    form = {"in_folder": "/fileShares/c/few", "output_name": in_share_json("full"), "model_type": "UNET",
            "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001"}  # fmt: skip
    params = parse(form)
    submission.check(params, settings)
    real = zipfile.ZipFile.writestr

    def fills_up(self: zipfile.ZipFile, name: Any, data: Any, *args: Any, **kwargs: Any) -> None:
        if str(getattr(name, "filename", name)).endswith(".pth"):  # after the EMD: a partial file is on disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, name, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", fills_up)
    with pytest.raises(TrainingError) as failed:
        train(params, settings, tmp_path / "work", Progress(lambda t: None, lambda t: None, lambda p, t: None))
    assert "is full: the package was not written" in failed.value.message
    assert "output_name" in failed.value.details[0]
    models = settings.stores["/fileShares/geotrain"] / "models"
    assert [p for p in models.rglob("*") if p.is_file()] == []
