"""The inference function each pixel-classification package carries: it rebuilds the trained network with
torch and torchvision alone and runs as ArcGIS runs a Python raster function."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from geotrain.dlpk import verify
from geotrain.dlpk.package import PackageError
from geotrain.training.fit import LossOptions, SegmentationTask
from geotrain.training.models.registry import build
from geotrain.training.segmentation import network_parameters
from tests.exports import ExportSpec, write_classified_tiles
from tests.integration.test_train_shapes import _train

PRF = Path(__file__).parents[2] / "src" / "geotrain" / "dlpk" / "prf"


def _networks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("portable_networks", PRF / "geotrain_networks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("model_type", "backbone", "arguments"),
    [
        ("UNET", "RESNET18", {}),
        ("UNET", "VGG11", {}),
        ("PSPNET", "RESNET18", {"unet_aux_loss": True, "pointrend": True}),
        ("PSPNET", "DENSENET121", {"use_unet": False, "pyramid_sizes": [1, 2, 4]}),
        ("DEEPLAB", "RESNET18", {"pointrend": True}),
        ("DEEPLAB", "VGG11", {}),
    ],
)
def test_the_portable_network_matches_the_trained_one_weight_for_weight_and_output_for_output(
    model_type: str, backbone: str, arguments: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    built = build(model_type, backbone, 5, 3, "RANDOM", arguments)
    with torch.no_grad():  # BatchNorm statistics of its own, so that they must be carried over too
        built.network.train()(torch.randn(2, 5, 64, 64))
    emd = {
        "ModelConfiguration": f"geotrain.{model_type.lower()}",
        "Classes": [{"Value": 1}, {"Value": 2}],
        "ModelParameters": {
            "backbone": backbone.lower(),
            "in_channels": 5,
            **network_parameters(model_type, arguments, built.network),
        },
    }
    portable = _networks().pixel_classifier(emd)
    portable.load_state_dict(built.network.state_dict(), strict=True)
    task = SegmentationTask(built.network, built.encoder, 3, 1e-3, LossOptions(), False).eval()
    x = torch.randn(2, 5, 64, 96)
    with torch.no_grad():
        assert torch.equal(task(x), portable.eval()(x))


def test_a_trained_package_runs_through_its_function_apart_from_geotrain(tmp_path: Path) -> None:
    write_classified_tiles(tmp_path / "chips" / "ms", ExportSpec(chips=6, size=40, bands=4, dtype="uint16"))
    emd, messages = _train(
        tmp_path,
        {"in_folder": "/fileShares/c/ms", "output_name": '{"name": "ms"}', "model_type": "UNET",
         "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001", "batch_size": "2"},
    )  # fmt: skip
    # the job ran the package's function on a validation chip and compared it with the trained network
    assert any(m.startswith("Checked the package: its inference function") and "100.0%" in m for m in messages)
    (package,) = (tmp_path / "home").rglob("ms.dlpk")
    with zipfile.ZipFile(package) as zf:
        assert {"GeotrainPixelClassifier.py", "geotrain_networks.py"} <= set(zf.namelist())
    assert emd["InferenceFunction"] == "GeotrainPixelClassifier.py"
    # a block larger than the chips and of no multiple of 32, as ArcGIS hands a padded tile
    pixels = np.random.default_rng(1).integers(0, 4000, size=(4, 75, 90)).astype(np.uint16)
    out = verify.run_function(package, pixels, tmp_path / "run")
    assert out.shape == (1, 75, 90) and out.dtype == np.int32
    assert set(np.unique(out)) <= {0, 3, 7, 9}  # NoData and the export's class values


def test_a_function_that_imports_geotrain_is_caught(tmp_path: Path) -> None:
    write_classified_tiles(tmp_path / "chips" / "ms", ExportSpec(chips=4, size=32, bands=3, dtype="uint8"))
    _train(
        tmp_path,
        {"in_folder": "/fileShares/c/ms", "output_name": '{"name": "ms"}', "model_type": "UNET",
         "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001", "batch_size": "2"},
    )  # fmt: skip
    (package,) = (tmp_path / "home").rglob("ms.dlpk")
    tampered = tmp_path / "tampered.dlpk"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "GeotrainPixelClassifier.py":
                future = b"from __future__ import annotations\n"
                data = data.replace(future, future + b"import geotrain.config\n")
            dst.writestr(name, data)
    with pytest.raises(PackageError, match="an inference function must not import geotrain"):
        verify.run_function(tampered, np.zeros((3, 32, 32), dtype=np.uint8), tmp_path / "run")
    assert json.loads(zipfile.ZipFile(package).read("ms.emd"))["ModelType"] == "ImageClassification"
