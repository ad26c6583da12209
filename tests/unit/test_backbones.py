"""Every backbone keyword ArcGIS accepts for a built model type builds and runs forward."""

from __future__ import annotations

import pytest
import torch

from geotrain.task import catalog
from geotrain.training.classification import build_classifier
from geotrain.training.detection import build_fasterrcnn
from geotrain.training.models.registry import build

CASES = [(m, b) for m, info in sorted(catalog.BUILT.items()) for b in info.backbones_built]


@pytest.mark.parametrize(("model_type", "backbone"), CASES)
def test_backbone_builds_and_runs_forward(model_type: str, backbone: str) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        family = catalog.BUILT[model_type].family
        if family == "object_classification":
            built = build_classifier(backbone, 5, 4, "RANDOM")
            built.network.eval()
            assert built.network(torch.randn(2, 5, 32, 32)).shape == (2, 4)
        elif family == "object_detection":
            built = build_fasterrcnn(backbone, 4, 3, "RANDOM", 64, freeze=False)
            built.network.eval()
            out = built.network([torch.randn(4, 32, 32)])
            assert set(out[0]) == {"boxes", "labels", "scores"}
        else:
            built = build(model_type, backbone, 5, 3, "RANDOM")
            built.network.eval()
            assert built.network(torch.randn(1, 5, 64, 64)).shape == (1, 3, 64, 64)
    assert built.pretrained_from is None and "random initialisation" in built.notes[0]


def test_densenet_weights_with_old_key_names_load(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's DenseNet files spell some keys 'norm.1'; they must still load into the encoder."""
    import re
    from pathlib import Path

    import torchvision

    home = Path(str(tmp_path))
    (home / "hub" / "checkpoints").mkdir(parents=True)
    state = torchvision.models.densenet121().state_dict()
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))(\d)", r"\1.\2", k): v for k, v in state.items()}
    assert any(".norm.1." in k for k in old)
    torch.save(old, home / "hub" / "checkpoints" / "densenet121-a639ec97.pth")
    monkeypatch.setenv("TORCH_HOME", str(home))
    built = build("PSPNET", "DENSENET121", 4, 2, "RED_BAND")
    assert built.pretrained_from == "densenet121-a639ec97.pth"
    first = built.encoder.state_dict()["features.conv0.weight"]
    assert torch.equal(first[:, :3], state["features.conv0.weight"]) and torch.equal(
        first[:, 3], state["features.conv0.weight"][:, 0]
    )
