"""The API never imports torch: it must start in a second on a host without a GPU stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.exports import write_classified_tiles


def test_api_and_submit_checks_do_not_import_torch(tmp_path: Path) -> None:
    write_classified_tiles(tmp_path / "chips" / "e")
    code = f"""
import sys
from fastapi.testclient import TestClient
from geotrain.api.app import create_app
from geotrain.config import Settings
settings = Settings(home={str(tmp_path / "home")!r}, data_stores={{"/fileShares/c": {str(tmp_path / "chips")!r}}})
with TestClient(create_app(settings, workers=1)) as client:
    r = client.post("/TrainDeepLearningModel/submitJob", data={{"f": "json", "in_folder": "/fileShares/c/e",
                    "output_name": '{{"name": "x"}}', "model_type": "UNET"}})
    assert "jobId" in r.json(), r.json()
    client.get("/jobs/" + r.json()["jobId"] + "/cancel")
print("torch" in sys.modules, "pytorch_lightning" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
