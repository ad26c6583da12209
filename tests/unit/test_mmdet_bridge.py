"""The bridge from OpenMMLab's mmdet detectors to geotrain's detector interface (MMDETECTION): boxes and classes
handed over in mmdet's terms, every offered model learning and predicting on any band count. Runs where the host
has OpenMMLab (README's OpenMMLab section); CI has none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geotrain.task import catalog

MISSING = catalog.openmmlab_missing("mmdet")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"OpenMMLab is not installed here: {MISSING}")


def _built(model: str, input_size: int = 128) -> torch.nn.Module:
    from geotrain.training.models import openmmlab

    arch = "resnet50" if model in catalog.MMDET_BOTTLENECK_ONLY else "resnet18"
    # four bands; three foreground classes and the background, as geotrain's detectors count them
    return openmmlab.build_mmdet(model, arch, 4, 4, input_size, "random", False).network


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[4.0, 6.0, 20.0, 18.0], [30.0, 2.0, 44.0, 40.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)},  # a chip without objects
    ]


def test_chips_are_resized_to_the_input_size_and_boxes_and_classes_handed_over_in_mmdets_terms() -> None:
    network = _built("atss", input_size=96)
    batch, samples = network._batch([torch.rand(4, 48, 40), torch.rand(4, 48, 40)], _targets())
    # the shorter side to 96 (40 -> 96, 48 -> 115), padded to a multiple of 32
    assert batch.shape == (2, 4, 128, 96)
    first = samples[0]
    assert first.img_shape == (115, 96) and first.ori_shape == (48, 40) and first.batch_input_shape == (128, 96)
    sy = 115 / 48
    expected = torch.tensor([[4 * 2.4, 6 * sy, 20 * 2.4, 18 * sy], [30 * 2.4, 2 * sy, 44 * 2.4, 40 * sy]])
    assert torch.allclose(first.gt_instances.bboxes, expected)
    assert first.gt_instances.labels.tolist() == [0, 2]  # mmdet has no background class
    # predict(rescale=True) divides the resized boxes by scale_factor, as this does: back in the chip's pixels
    from mmdet.structures.bbox import scale_boxes

    back = scale_boxes(first.gt_instances.bboxes.clone(), [1 / f for f in first.scale_factor])
    assert torch.allclose(back, _targets()[0]["boxes"], atol=1e-4)
    assert first.pad_shape == (128, 96)
    assert len(samples[1].gt_instances.bboxes) == 0


@pytest.mark.parametrize("model", catalog.mmdet_model_names())
def test_every_offered_mmdet_model_learns_and_predicts_boxes_in_the_chips_pixels(model: str) -> None:
    torch.manual_seed(0)
    network = _built(model)
    network.train()
    losses = network([torch.rand(4, 48, 48), torch.rand(4, 48, 48)], _targets())
    assert losses and all(torch.isfinite(v) and v.dim() == 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.model.backbone.parameters())
    network.eval()
    network.score_thresh = 0.0
    with torch.no_grad():
        (found,) = network([torch.rand(4, 48, 48)])
    assert found["boxes"].shape[1] == 4 and len(found["boxes"]) == len(found["scores"]) == len(found["labels"])
    assert found["boxes"].min() >= 0 and found["boxes"].max() <= 48
    assert set(found["labels"].tolist()) <= {1, 2, 3}


def test_the_score_threshold_the_inference_function_lowers_reaches_mmdets_test_settings() -> None:
    network = _built("cascade_rcnn")
    assert network.score_thresh == pytest.approx(0.05)  # mmdet's own
    network.score_thresh = 0.01
    assert network.model.roi_head.test_cfg["score_thr"] == 0.01 and network.score_thresh == 0.01


@pytest.mark.parametrize(("model", "arch"), [("atss", "resnet18"), ("detectors", "resnet50")])
def test_cached_imagenet_weights_start_the_backbone_and_freezing_keeps_resnets_own_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, arch: str
) -> None:
    import torchvision

    from geotrain.training.models import openmmlab

    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    state = getattr(torchvision.models, arch)().state_dict()
    torch.save(state, tmp_path / "hub" / "checkpoints" / f"{arch}-0123abcd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    built = openmmlab.build_mmdet(model, arch, 3, 2, 128, "random", True)
    backbone = built.network.model.backbone
    assert built.pretrained_from == f"{arch}-0123abcd.pth"
    assert torch.equal(backbone.state_dict()["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])
    trainable = {k for k, p in backbone.named_parameters() if p.requires_grad}
    assert not trainable & set(state)  # ResNet's own weights stay as ImageNet's
    if model == "detectors":
        # its switchable atrous convolutions learn, starting as the plain convolution (switch 1, no context)
        assert "layer3.0.conv2.switch.weight" in trainable
        switch = backbone.get_submodule("layer3.0.conv2.switch")
        assert float(switch.bias.abs().max()) == 1.0 and float(switch.weight.abs().max()) == 0.0
        assert any("of detectors's backbone are layers of its own" in note for note in built.notes)
        (rfp,) = built.network.model.neck.rfp_modules  # the recursive pyramid's second ResNet starts from ImageNet
        assert torch.equal(rfp.state_dict()["layer2.1.conv1.weight"], state["layer2.1.conv1.weight"])
    else:
        assert not trainable


def test_a_two_stage_detectors_proposals_are_scaled_to_the_chip_as_geotrains_fasterrcnn_has_them() -> None:
    from geotrain.dlpk.prf.geotrain_networks import rcnn_counts
    from geotrain.training.models import openmmlab

    config = openmmlab.detector_config("cascade_rcnn", "resnet18", 3, 2, 128, False)
    counts = rcnn_counts(128)
    assert config["train_cfg"]["rpn_proposal"]["nms_pre"] == counts["rpn_pre_nms_top_n_train"] < 2000
    assert config["test_cfg"]["rpn"]["max_per_img"] == counts["rpn_post_nms_top_n_test"] < 1000
    assert {stage["sampler"]["num"] for stage in config["train_cfg"]["rcnn"]} == {counts["box_batch_size_per_image"]}
    # an 800 px input keeps mmdet's own counts
    assert (
        openmmlab.detector_config("cascade_rcnn", "resnet18", 3, 2, 800, False)["train_cfg"]["rcnn"][0]["sampler"][
            "num"
        ]
        == 512
    )


def test_dino_has_no_more_queries_than_a_small_chips_encoder_has_cells_to_pick_them_from() -> None:
    from geotrain.training.models import openmmlab

    assert openmmlab.detector_config("dino", "resnet18", 3, 1, 128, False)["num_queries"] == 100
    small = openmmlab.detector_config("dino", "resnet18", 3, 1, 32, False)
    assert small["num_queries"] == 16 + 4 + 1 + 1 and small["test_cfg"]["max_per_img"] == 22
    network = _built("dino", input_size=32)
    network.eval()
    with torch.no_grad():
        (found,) = network([torch.rand(4, 32, 32)])
    assert len(found["boxes"]) <= 22
