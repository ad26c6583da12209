"""Losses, metrics and first-layer adaptation behave as documented."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import torch

from geotrain.training.fit import LossOptions, SegmentationTask
from geotrain.training.metrics import from_confusion
from geotrain.training.models.pretrained import adapt_first_conv
from geotrain.training.models.registry import build


def _task(**options: object) -> SegmentationTask:
    built = build("UNET", "RESNET18", 3, 3, "RANDOM")
    return SegmentationTask(built.network, built.encoder, 3, 1e-3, LossOptions(**options), freeze=False)  # type: ignore[arg-type]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    return logits, target


def test_ignored_classes_do_not_contribute_to_the_loss() -> None:
    logits, target = _batch()
    task = _task(ignore_index=[2])
    changed = logits.clone()
    changed[:, :, :, :][target.unsqueeze(1).expand_as(logits) == 2] = 100.0  # only pixels of class 2 change
    assert torch.allclose(task._loss(logits, target), task._loss(changed, target))
    assert not torch.allclose(_task()._loss(logits, target), _task()._loss(changed, target))


def test_focal_loss_is_below_cross_entropy() -> None:
    logits, target = _batch()
    assert _task(focal=True)._loss(logits, target) < _task()._loss(logits, target)


def test_dice_fraction_and_average_change_the_loss() -> None:
    logits, target = _batch()
    plain = _task()._loss(logits, target)
    micro = _task(dice_fraction=0.5, dice_average="micro")._loss(logits, target)
    macro = _task(dice_fraction=0.5, dice_average="macro")._loss(logits, target)
    assert len({round(float(v), 6) for v in (plain, micro, macro)}) == 3


def test_class_weights_weigh_the_loss() -> None:
    logits, target = _batch()
    weighted = _task(class_weights=torch.tensor([0.1, 1.0, 5.0]))._loss(logits, target)
    assert not torch.isclose(weighted, _task()._loss(logits, target))


def test_freezing_keeps_the_encoder_but_not_its_batchnorm_trainable() -> None:
    built = build("UNET", "RESNET18", 3, 3, "RANDOM")
    SegmentationTask(built.network, built.encoder, 3, 1e-3, LossOptions(), freeze=True)
    assert not built.encoder.conv1.weight.requires_grad and built.encoder.bn1.weight.requires_grad
    assert all(p.requires_grad for p in built.network.decoder.parameters())


def test_metrics_from_a_confusion_matrix() -> None:
    m = from_confusion(torch.tensor([[5, 1, 0], [2, 2, 0], [0, 0, 0]]))
    assert m.accuracy == pytest.approx(7 / 10)
    assert m.precision[0] == pytest.approx(5 / 7) and m.recall[1] == pytest.approx(0.5)
    assert m.iou[2] == 0.0 and m.miou == pytest.approx((5 / 8 + 2 / 5) / 2)  # an absent class does not count


def test_first_layer_schemes() -> None:
    rgb = torch.randn(8, 3, 7, 7)
    red = adapt_first_conv(rgb, 5, "RED_BAND")
    assert torch.equal(red[:, :3], rgb) and torch.equal(red[:, 4], rgb[:, 0])
    rand = adapt_first_conv(rgb, 5, "RANDOM")
    assert torch.equal(rand[:, :3], rgb) and not torch.equal(rand[:, 3], rgb[:, 0])
    assert not torch.equal(adapt_first_conv(rgb, 3, "ALL_RANDOM"), rgb)
    assert adapt_first_conv(rgb, 1, "RANDOM").shape == (8, 1, 7, 7)


def test_mixup_blends_each_sample_with_a_partner_of_its_batch_mostly_itself() -> None:
    from geotrain.training.fit import mixup

    torch.manual_seed(0)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone()
    mixed, partner, share = mixup(x)
    assert 0.5 <= share <= 1.0 and sorted(partner.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(mixed, share * x + (1 - share) * x[partner])


def test_oversampling_draws_each_class_about_equally() -> None:
    from geotrain.training.classification import _oversampling_weights
    from geotrain.training.data.scan import Scan

    class Labels:
        def __init__(self, labels: list[Any]) -> None:
            self.labels = labels

        def sample(self, i: int) -> tuple[None, Any]:
            return None, self.labels[i]

    single = _oversampling_weights(cast(Scan[Any], Labels([0, 0, 0, 1])), range(4), 2, multi_label=False)
    assert single == [1 / 3, 1 / 3, 1 / 3, 1.0]  # three chips of class 0 weigh as much as the one of class 1
    multi = Labels([np.array([1, 0]), np.array([1, 0]), np.array([1, 1])])
    assert _oversampling_weights(cast(Scan[Any], multi), range(3), 2, multi_label=True) == [1 / 3, 1 / 3, 1.0]


def test_mixed_loss_scores_the_blend_against_both_targets_in_its_shares() -> None:
    from geotrain.training.fit import mixed_loss, mixup

    x, y = torch.randn(4, 2), torch.randn(4, 2)
    torch.manual_seed(3)
    mixed, partner, share = mixup(x)
    expected = share * (mixed - y).abs().sum() + (1 - share) * (mixed - y[partner]).abs().sum()
    torch.manual_seed(3)
    assert torch.allclose(mixed_loss(x, y, lambda t: t, lambda out, t: (out - t).abs().sum()), expected)


@pytest.mark.parametrize("downsample", [1, 2, 3, 4])
def test_a_resnet_block_generator_comes_back_up_as_many_times_as_it_went_down(downsample: int) -> None:
    from geotrain.dlpk.prf.geotrain_networks import ResnetGenerator

    generator = ResnetGenerator(3, 2, blocks=1, width=8, downsample=downsample)
    assert generator(torch.randn(1, 3, 64, 48)).shape == (1, 2, 64, 48)


@pytest.mark.parametrize("enhancers", [1, 2])
def test_local_enhancers_give_the_image_at_its_own_size_around_a_coarser_global_generator(enhancers: int) -> None:
    from geotrain.dlpk.prf.geotrain_networks import LocalEnhancerGenerator

    generator = LocalEnhancerGenerator(3, 2, blocks=1, width=4, downsample=3, enhancers=enhancers, local_blocks=1)
    assert generator(torch.randn(1, 3, 50, 37)).shape == (1, 2, 50, 37)
    # the global generator has twice the filters per enhancer: 4 * 2^enhancers at its first layer
    first = next(m for m in generator.global_model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.out_channels == 4 * 2**enhancers
