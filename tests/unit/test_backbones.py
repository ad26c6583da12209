"""Every backbone keyword ArcGIS accepts for a built model type builds and runs forward: each model type with
the smallest member of each backbone family it takes (its builder's code path for that family), and every
backbone keyword at least once (the members of a family differ only in depth)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from geotrain.dlpk.prf.geotrain_networks import CaptionNet, MaskNet, SiamMaskNet, Translator
from geotrain.task import catalog
from geotrain.training.classification import build_classifier
from geotrain.training.models.detectors import build_detector
from geotrain.training.models.registry import build, with_weights

# model types in the order of what it costs to build one, cheapest first
# (HED_EDGEDETECTOR's VGGs are built without their classifier: the cheapest home for each VGG keyword)
CHEAPEST_FIRST = ["FEATURE_CLASSIFIER", "UNET", "HED_EDGEDETECTOR", "PSPNET", "DEEPLAB", "SSD", "RETINANET",
                  "FASTERRCNN", "MASKRCNN", "YOLOV3"]  # fmt: skip


def _family(backbone: str) -> str:
    return re.match(r"[A-Z]+", backbone).group(0)  # type: ignore[union-attr]


def _depth(backbone: str) -> tuple[int, bool]:
    found = re.search(r"\d+", backbone)
    return (int(found.group(0)) if found else 0, backbone.endswith("_BN"))


def _cases() -> list[tuple[str, str]]:
    built = {m: info.backbones_built for m, info in catalog.BUILT.items()}
    cases: set[tuple[str, str]] = set()
    for model_type, backbones in built.items():
        families: dict[str, list[str]] = {}
        for backbone in backbones:
            families.setdefault(_family(backbone), []).append(backbone)
        cases |= {(model_type, min(members, key=_depth)) for members in families.values()}
    for backbone in sorted({b for backbones in built.values() for b in backbones}):
        if not any(b == backbone for _, b in cases):
            cases.add((next(m for m in [*CHEAPEST_FIRST, *built] if m in built and backbone in built[m]), backbone))
    return sorted(cases)


CASES = _cases()


def test_every_backbone_keyword_and_every_model_type_is_built() -> None:
    assert {b for _, b in CASES} == {b for info in catalog.BUILT.values() for b in info.backbones_built}
    # CYCLEGAN and PIX2PIXHD have generators of their own, no backbone
    assert {m for m, _ in CASES} == {m for m, info in catalog.BUILT.items() if info.backbones}


@pytest.mark.parametrize(("model_type", "backbone"), CASES)
def test_backbone_builds_and_runs_forward(model_type: str, backbone: str) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        family = catalog.BUILT[model_type].family
        if family == "object_classification":
            built = build_classifier(backbone, 5, 4, "RANDOM")
            built.network.eval()
            assert built.network(torch.randn(2, 5, 32, 32)).shape == (2, 4)
        elif family in ("object_detection", "instance_segmentation"):
            built = build_detector(model_type, backbone, 4, 3, "RANDOM", 64, False, {})
            built.network.eval()
            out = built.network([torch.randn(4, 32, 32)])
            expected = {"boxes", "labels", "scores"} | ({"masks"} if model_type == "MASKRCNN" else set())
            assert set(out[0]) == expected
        elif family == "image_captioning":
            captioner = CaptionNet(backbone.lower(), 5, 12, 16, 16, 8)
            built = with_weights(captioner, captioner.encoder, backbone.lower(), 5, "RANDOM")
            built.network.eval()
            assert captioner(torch.randn(2, 5, 64, 64), torch.randint(0, 12, (2, 6))).shape == (2, 5, 12)
            ids, chances = captioner.caption(torch.randn(2, 5, 64, 64), 4)
            assert ids.shape == chances.shape and ids.shape[0] == 2 and ids.shape[1] <= 4
        elif family == "panoptic_segmentation":
            masker = MaskNet(backbone.lower(), 5, 3, queries=4)
            built = with_weights(masker, masker.encoder, backbone.lower(), 5, "RANDOM")
            built.network.eval()
            assert masker(torch.randn(1, 5, 40, 40)).shape == (1, 2, 40, 40)  # class index and segment per pixel
        elif family == "object_tracking":
            tracker = SiamMaskNet(backbone.lower(), 5, 32, 64)
            built = with_weights(tracker, tracker.encoder, backbone.lower(), 5, "RANDOM", ("layer4",))
            built.network.eval()
            outputs = tracker(torch.randn(2, 5, 32, 32), torch.randn(2, 5, 64, 64))
            assert outputs[0].shape == (2, 5, 6, 6) and outputs[1].shape == (2, 20, 6, 6)
            # the refinement module's mask at two locations: the exemplar-sized window's, at half its side
            assert tracker.masks(outputs, torch.tensor([[0, 2, 3], [1, 0, 5]])).shape == (2, 16, 16)
        elif family == "image_translation":
            network = Translator(backbone.lower(), 5, 2, residual=False)
            built = with_weights(network, network.encoder, backbone.lower(), 5, "RANDOM")
            built.network.eval()
            assert built.network(torch.randn(1, 5, 64, 64)).shape == (1, 2, 64, 64)
        else:
            bands = 6 if model_type == "CHANGEDETECTOR" else 5  # a change detector reads two dates of 3 bands
            classes = 2 if family == "edge_detection" else 3  # an edge detector: NoData and edge
            built = build(model_type, backbone, bands, classes, "RANDOM")
            built.network.eval()
            assert built.network(torch.randn(1, bands, 64, 64)).shape == (1, classes, 64, 64)
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


def test_siammask_loads_imagenet_weights_of_the_four_stages_it_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision

    home = tmp_path / "torch"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(home))
    tracker = SiamMaskNet("resnet18", 3, 32, 64)
    built = with_weights(tracker, tracker.encoder, "resnet18", 3, "RANDOM", ("layer4",))
    assert built.pretrained_from == "resnet18-f37072fd.pth" and not hasattr(tracker.encoder, "layer4")
    assert torch.equal(
        tracker.encoder.get_submodule("layer3").state_dict()["0.conv1.weight"], state["layer3.0.conv1.weight"]
    )


def test_ssd_anchors_follow_grids_zooms_and_ratios_in_the_heads_order() -> None:
    from torchvision.models.detection.image_list import ImageList

    from geotrain.dlpk.prf.geotrain_networks import GridAnchors

    anchors = GridAnchors([2, 1], [1.0, 0.5], [[1.0, 1.0], [1.0, 0.5]])
    assert anchors.num_anchors_per_location() == [4, 4]
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    (boxes,) = anchors(images, [torch.zeros(1, 8, 2, 2), torch.zeros(1, 8, 1, 1)])
    assert boxes.shape == (2 * 2 * 4 + 1 * 4, 4)
    assert boxes[0].tolist() == [0, 0, 32, 32]  # top-left cell of the 2 x 2 grid, zoom 1, ratio 1:1
    assert boxes[1].tolist() == [0, 8, 32, 24]  # ratio [1, 0.5]: half as high
    assert boxes[2].tolist() == [8, 8, 24, 24]  # zoom 0.5
    assert boxes[4].tolist() == [32, 0, 64, 32]  # the next cell along the row
    assert boxes[8].tolist() == [0, 32, 32, 64]  # the second row
    assert boxes[16].tolist() == [0, 0, 64, 64]  # the 1 x 1 grid covers the chip


def test_yolo_anchors_are_fitted_to_the_box_sizes_smallest_first() -> None:
    from geotrain.training.models.yolo import kmeans_anchors

    rng = np.random.default_rng(0)
    # three clusters of box shapes: small squares, wide boxes, large tall boxes
    sizes = np.concatenate([rng.normal(c, 1.0, size=(60, 2)) for c in ([8, 8], [40, 12], [30, 90])])
    anchors = kmeans_anchors(sizes, k=3)
    assert [round(w) for w, _ in anchors] == [8, 40, 30] and [round(h) for _, h in anchors] == [8, 12, 90]
    with pytest.raises(ValueError, match="2 boxes cannot place 9 anchors"):
        kmeans_anchors(np.array([[4.0, 4.0], [5.0, 5.0]]))


@pytest.mark.parametrize(
    ("arguments", "kind", "pyramid"),
    [
        ({}, "PSPUnet", 4),  # arcgis.learn's default: use_unet True, pyramid [1, 2, 3, 6]
        ({"use_net": False}, "PSPNet", 4),  # Pro's spelling
        ({"use_unet": False, "pyramid_sizes": [1, 2, 4]}, "PSPNet", 3),
        ({"pyramid_sizes": [2, 5]}, "PSPUnet", 2),
    ],
)
def test_pspnet_arguments_choose_the_decoder_and_pyramid(arguments: dict[str, Any], kind: str, pyramid: int) -> None:
    built = build("PSPNET", "RESNET18", 4, 3, "RANDOM", arguments)
    network = built.network
    assert type(network).__name__ == kind
    psp = network.psp if kind == "PSPUnet" else network.decoder.psp
    assert len(psp.blocks) == pyramid
    network.train()
    assert network(torch.randn(2, 4, 64, 64)).shape == (2, 3, 64, 64)


def test_ssd_focal_loss_and_class_prior() -> None:
    from geotrain.training.models.detectors import FocalSSD, build_detector

    torch.manual_seed(0)
    built = build_detector("SSD", "RESNET18", 3, 3, "RANDOM", 64, False, {"focal_loss": True, "bias": -3.0})
    network = built.network
    assert isinstance(network, FocalSSD)
    head = network.head.classification_head
    for conv in head.module_list:
        prior = conv.bias.view(-1, 3)
        assert torch.all(prior[:, 1:] == -3.0) and not torch.all(prior[:, 0] == -3.0)
    network.train()
    target = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([2])}
    losses = network([torch.randn(3, 64, 64)], [target])
    assert set(losses) == {"bbox_regression", "classification"}
    # summed over every anchor and class, divided by the matched anchors: finite and not swamped
    assert 0 < float(losses["classification"].detach()) < 50 and torch.isfinite(losses["bbox_regression"])


def test_pspnet_unet_aux_loss_adds_an_auxiliary_head_in_training_only() -> None:
    from geotrain.training.fit import AUX_WEIGHT, LossOptions, SegmentationTask

    torch.manual_seed(0)
    network = build("PSPNET", "RESNET18", 4, 3, "RANDOM", {"unet_aux_loss": True}).network
    task = SegmentationTask(network, network.encoder, 3, 1e-3, LossOptions(), freeze=False)
    x, y = torch.randn(2, 4, 64, 64), torch.randint(0, 3, (2, 64, 64))
    task.train()
    out = task._outputs(x)
    assert out.aux is not None and out.logits.shape == out.aux.shape == (2, 3, 64, 64)
    expected = task._loss(out.logits, y) + AUX_WEIGHT * task._loss(out.aux, y)
    assert torch.allclose(task._training_loss(out, y), expected)
    task.eval()
    assert task._outputs(x).aux is None and task(x).shape == (2, 3, 64, 64)


def test_darknet53_weights_in_timms_file_name_load_into_yolov3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    from geotrain.training.models.detectors import build_detector

    home = tmp_path
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(2)
    state = timm.create_model("darknet53").state_dict()  # with its classifier head, as timm's file holds
    torch.save(state, home / "hub" / "checkpoints" / "darknet53_256_c2ns-3aeff817.pth")
    monkeypatch.setenv("TORCH_HOME", str(home))
    built = build_detector("YOLOV3", "DARKNET53", 4, 3, "RED_BAND", 64, False, {})
    assert built.pretrained_from == "darknet53_256_c2ns-3aeff817.pth"
    first = built.encoder.state_dict()["stem_conv1.conv.weight"]
    original = state["stem.conv1.conv.weight"]
    assert torch.equal(first[:, :3], original) and torch.equal(first[:, 3], original[:, 0])
    unused = build_detector("YOLOV3", "DARKNET53", 3, 3, "RANDOM", 64, False, {"pretrained_backbone": False})
    assert unused.pretrained_from is None and "pretrained_backbone False" in unused.notes[0]


def test_ssd_version_2_fits_one_grid_per_cluster_of_box_sizes() -> None:
    from geotrain.training.detection import _fitted_grids

    rng = np.random.default_rng(1)
    # boxes about 8, 16 and 32 px across on 64 px chips: grids of 8, 4 and 2 cells serve them
    sizes = np.concatenate([rng.normal(s, 0.5, size=(40, 2)) for s in (8, 16, 32)])
    said: list[str] = []
    assert _fitted_grids(sizes, 64, said.append) == [8, 4, 2]
    assert said == ["SSD grids fitted to the training boxes: [8, 4, 2]."]
    assert _fitted_grids(sizes[:2], 64, said.append) == [4, 2, 1]  # too few boxes: version 1's grids
    assert said[-1].startswith("SSD grids: 2 boxes cannot place 3 anchors")
