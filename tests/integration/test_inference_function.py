"""The inference function each pixel-classification package carries: it rebuilds the trained network with
torch and torchvision alone and runs as ArcGIS runs a Python raster function."""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from geotrain.dlpk import verify
from geotrain.dlpk.archive import PackageError
from geotrain.training.fit import LossOptions, SegmentationTask
from geotrain.training.models.registry import build
from geotrain.training.segmentation import network_parameters
from tests import prf
from tests.conftest import in_share_json
from tests.exports import ExportSpec, write_classified_tiles, write_scene
from tests.integration.test_train_shapes import _train


@pytest.mark.parametrize(
    ("model_type", "backbone", "arguments"),
    [
        ("UNET", "RESNET18", {}),
        ("UNET", "VGG11", {}),
        ("PSPNET", "RESNET18", {"unet_aux_loss": True, "pointrend": True}),
        ("PSPNET", "DENSENET121", {"use_unet": False, "pyramid_sizes": [1, 2, 4]}),
        ("DEEPLAB", "RESNET18", {"pointrend": True}),
        ("DEEPLAB", "DENSENET121", {}),
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
    portable = prf.load("geotrain_networks").pixel_classifier(emd)
    portable.load_state_dict(built.network.state_dict(), strict=True)
    task = SegmentationTask(built.network, built.encoder, 3, 1e-3, LossOptions(), False).eval()
    x = torch.randn(2, 5, 64, 96)
    with torch.no_grad():
        assert torch.equal(task(x), portable.eval()(x))


FORM = {"in_folder": "/fileShares/c/ms", "output_name": in_share_json("ms"), "model_type": "UNET",
        "backbone_model": "RESNET18", "max_epochs": "1", "learning_rate": "0.001", "batch_size": "2"}  # fmt: skip


@dataclass
class Trained:
    root: Path
    package: Path
    emd: dict[str, Any]
    messages: list[str]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A 4-band 16-bit UNET package, trained in process with the package check on."""
    root = tmp_path_factory.mktemp("trained")
    write_classified_tiles(root / "chips" / "ms", ExportSpec(chips=6, size=40, bands=4, dtype="uint16"))
    emd, messages = _train(root, FORM, check_packages=True)
    (package,) = (root / "home").rglob("ms.dlpk")
    return Trained(root, package, emd, messages)


def test_a_trained_package_runs_through_its_function_apart_from_geotrain(trained: Trained, tmp_path: Path) -> None:
    # the job ran the package's function on a validation chip and compared it with the trained network
    assert any(m.startswith("Checked the package: its inference function") and "100.0%" in m for m in trained.messages)
    with zipfile.ZipFile(trained.package) as zf:
        assert {"GeotrainPixelClassifier.py", "geotrain_networks.py"} <= set(zf.namelist())
    assert trained.emd["InferenceFunction"] == "GeotrainPixelClassifier.py"
    # a block larger than the chips and of no multiple of 32, as ArcGIS hands a padded tile
    pixels = np.random.default_rng(1).integers(0, 4000, size=(4, 75, 90)).astype(np.uint16)
    out = verify.run_function(trained.package, pixels, tmp_path / "run")
    assert out.shape == (1, 75, 90) and out.dtype == np.int32
    assert set(np.unique(out)) <= {0, 3, 7, 9}  # NoData and the export's class values


def test_predict_classifies_a_multi_tile_geotiff_keeping_its_size_transform_and_crs(
    trained: Trained, tmp_path: Path
) -> None:
    import rasterio

    from geotrain.cli import main

    image = tmp_path / "scene.tif"
    pixels = np.random.default_rng(2).integers(0, 4000, size=(4, 131, 157)).astype(np.uint16)
    transform = write_scene(image, pixels)
    out = tmp_path / "classified.tif"
    # 40 px tiles with 10 px padding: 20 px kept from each, 8 x 7 tiles
    argv = ["predict", str(trained.package), str(image), "--out", str(out), "--padding", "10", "--device", "-1"]
    assert main(argv) == 0
    with rasterio.open(out) as result:
        assert (result.width, result.height, result.count) == (157, 131, 1)
        assert result.transform == transform and result.crs.to_epsg() == 32633
        values = result.read(1)
    assert set(np.unique(values)) <= {0, 3, 7, 9}
    # each tile's kept centre is what the function gives that tile
    block = np.zeros((4, 40, 40), dtype=np.uint16)
    block[:, 10:, 10:] = pixels[:, :30, :30]  # the top-left tile, its padding outside the image zero
    alone = verify.run_function(trained.package, block, tmp_path / "one")
    assert np.array_equal(alone[0, 10:30, 10:30], values[:20, :20])


def test_a_function_that_imports_geotrain_is_caught(trained: Trained, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.dlpk"
    with zipfile.ZipFile(trained.package) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "GeotrainPixelClassifier.py":
                future = b"from __future__ import annotations\n"
                data = data.replace(future, future + b"import geotrain.config\n")
            dst.writestr(name, data)
    with pytest.raises(PackageError, match="an inference function must not import geotrain"):
        verify.run_function(tampered, np.zeros((4, 32, 32), dtype=np.uint16), tmp_path / "run")


def test_a_package_whose_function_disagrees_with_the_model_fails_the_job_and_is_removed(
    trained: Trained, tmp_path: Path
) -> None:
    from geotrain.config import Settings
    from geotrain.errors import TrainingError
    from geotrain.publish.location import package_location
    from geotrain.task.params import parse
    from geotrain.task.submission import load_export
    from geotrain.training.job import Job, Progress

    settings = Settings(home=trained.root / "home", data_stores={"/fileShares/c": trained.root / "chips"})
    params = parse({**FORM, "output_name": in_share_json("broken")})
    target = package_location(params.output_name, settings)
    assert target is not None
    target.local.parent.mkdir(parents=True)
    shutil.copy(trained.package, target.local)  # as if this job had just written it
    messages: list[str] = []
    job = Job(params, settings, tmp_path / "work", Progress(messages.append, messages.append, lambda p, t: None),
              load_export(params, settings), target.local, target.uri)  # fmt: skip
    pixels = np.zeros((4, 40, 40), dtype=np.uint16)
    broken = r"failed its check and was not kept: .* agrees with the trained model on only 0\.0%"
    with pytest.raises(TrainingError, match=broken):
        # a class value the package cannot give: what a broken function would disagree with
        job.check_package(pixels, np.full((40, 40), 12345))
    assert not target.local.exists()
