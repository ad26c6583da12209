"""PointRend (the ``pointrend`` argument of PSPNET, DEEPLAB and MASKRCNN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geotrain.training.fit import LossOptions, SegmentationTask
from geotrain.training.models import pointrend
from geotrain.training.models.detectors import build_detector
from geotrain.training.models.registry import build


def test_importance_sampling_puts_most_points_where_the_classes_are_closest() -> None:
    logits = torch.zeros(1, 2, 64, 64)
    logits[:, 0] = 5.0  # confident everywhere but in columns 16-47, a tie there
    logits[:, 0, :, 16:48] = 0.0
    coords = pointrend.training_points(logits, 400)
    in_band = (coords[0, :, 0] * 64 >= 16) & (coords[0, :, 0] * 64 < 48)
    # the band holds half the 1200 candidates: the 300 important points all come from it, the 100 uniform
    # ones about half
    assert coords.shape == (1, 400, 2) and bool(in_band[:300].all())
    assert 0.3 < float(in_band[300:].float().mean()) < 0.7


def test_inference_re_predicts_exactly_the_most_uncertain_pixels() -> None:
    torch.manual_seed(0)
    built = build("DEEPLAB", "RESNET18", 3, 3, "RANDOM", {"pointrend": True})
    network = built.network.eval()
    assert isinstance(network, pointrend.PointRend)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        refined = network(x)
        coarse = network.network(x)
    changed = (refined != coarse).any(dim=1)
    assert int(changed.sum()) == pointrend.INFER_POINTS  # of 128 * 128
    gap = pointrend.uncertainty(coarse)[0]
    assert float(gap[changed[0]].min()) >= float(gap[~changed[0]].max())


def test_the_point_loss_trains_the_point_head_and_skips_padding() -> None:
    built = build("PSPNET", "RESNET18", 4, 3, "RANDOM", {"pointrend": True, "unet_aux_loss": True})
    task = SegmentationTask(built.network, built.encoder, 3, 1e-3, LossOptions(), False).train()
    x, y = torch.randn(2, 4, 40, 40), torch.randint(0, 3, (2, 40, 40))  # padded to 64 for the network
    out = task._outputs(x)
    assert out.points is not None and out.aux is not None and out.padding == (24, 24)
    task._training_loss(out, y).backward()
    head = built.network.get_submodule("point_head.0")
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_deeplab_gives_up_half_its_dilation_with_pointrend_unless_keep_dilation() -> None:
    def stride(arguments: dict[str, bool]) -> int:
        network = build("DEEPLAB", "RESNET18", 3, 2, "RANDOM", arguments).network.eval()
        encoder = network.get_submodule("network.encoder" if arguments.get("pointrend") else "encoder")
        with torch.no_grad():
            return 64 // int(encoder(torch.zeros(1, 3, 64, 64))[-1].shape[-1])

    assert stride({}) == 8
    assert stride({"pointrend": True}) == 16
    assert stride({"pointrend": True, "keep_dilation": True}) == 8


def test_maskrcnn_point_head_corrects_56_pixel_masks_and_learns_from_the_mask_loss() -> None:
    torch.manual_seed(0)
    built = build_detector("MASKRCNN", "RESNET18", 3, 2, "RANDOM", 64, False, {"pointrend": True})
    network = built.network.train()
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 8:40] = 1
    targets = [{"boxes": torch.tensor([[8.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([1]), "masks": masks}]
    losses = network([torch.randn(3, 64, 64)], targets)
    losses["loss_mask"].backward()
    # the head starts as no correction (its last layer zero), and the mask loss moves that layer first
    head = network.get_submodule("roi_heads.mask_predictor.point_head.4")
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    predictor = network.get_submodule("roi_heads.mask_predictor")
    with torch.no_grad():
        predictor._stash.fine = torch.randn(1, 256, 16, 16)
        predictor._stash.boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0]])]
        logits = predictor(torch.randn(1, 256, 14, 14))
        coarse = F.interpolate(predictor.predictor(torch.randn(1, 256, 14, 14)), scale_factor=2)
    assert logits.shape == (1, 2, 56, 56) and coarse.shape == logits.shape
