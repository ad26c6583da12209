"""Road extraction (MULTITASK_ROADEXTRACTOR, CONNECTNET) on Classified_Tiles road masks: a pixel classifier
trained beside a second task whose targets the masks imply, computed on the device each step.

MULTITASK_ROADEXTRACTOR: each road pixel's direction (undirected, 0 to 180 degrees, in ``orient_bin_size``
bins), from the structure tensor of the mask: the dominant orientation of its edges in a window wider than
a road, turned a quarter; road pixels with no dominant direction (crossings, blobs) count in neither class.
CONNECTNET: for each of 8 directions, whether the pixel ``REACH`` pixels away is road too (both ends road)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from geotrain.dlpk.prf.geotrain_networks import HourglassRoadNet, RoadNet, pad_to_stride
from geotrain.training.fit import PADDING_LABEL, LossOptions, SegmentationTask

ROADS = ("MULTITASK_ROADEXTRACTOR", "CONNECTNET")
MODEL_NAMES = {"MULTITASK_ROADEXTRACTOR": "MultiTaskRoadExtractor", "CONNECTNET": "ConnectNet"}
ORIENT_BIN_SIZE = 20  # degrees, arcgis.learn's default
REACH = 3  # pixels: how far apart two road pixels a connectivity channel links
DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
AUX_WEIGHT = 0.5  # the second task's share of the loss
MTL_MODEL = "hourglass"  # arcgis.learn's default network
COHERENT = 0.3  # a road pixel's structure tensor must be at least this one-directional to have a direction


def orientation_bins(bin_size: int) -> int:
    return math.ceil(180 / bin_size)


def aux_channels(model_type: str, bin_size: int) -> int:
    return orientation_bins(bin_size) + 1 if model_type == "MULTITASK_ROADEXTRACTOR" else len(DIRECTIONS)


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))


def orientation_target(labels: torch.Tensor, bin_size: int) -> torch.Tensor:
    """Per pixel: 0 off the road, 1 + the bin of the road's direction on it, ``PADDING_LABEL`` where a road
    pixel has no dominant direction."""
    road = (labels > 0).float()[:, None]
    smooth = _gaussian(road, 1.0)
    gy, gx = torch.gradient(smooth, dim=(2, 3))
    jxx, jyy, jxy = (_gaussian(g, 3.0) for g in (gx * gx, gy * gy, gx * gy))
    edge_angle = 0.5 * torch.atan2(2 * jxy, jxx - jyy)  # the edges' normal, -90 to 90 degrees
    direction = torch.remainder(torch.rad2deg(edge_angle) + 90.0, 180.0)  # along the road
    coherence = torch.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy).clamp(min=1e-9)
    index = (direction / bin_size).floor().long().clamp(max=orientation_bins(bin_size) - 1) + 1
    on_road = road > 0
    target = torch.where(on_road & (coherence > COHERENT), index, torch.zeros_like(index))
    target = torch.where(on_road & (coherence <= COHERENT), torch.full_like(index, PADDING_LABEL), target)
    return target[:, 0]


def connectivity_target(labels: torch.Tensor) -> torch.Tensor:
    """Per pixel and direction: 1 where the pixel and the one ``REACH`` away that way are both road."""
    road = (labels > 0).float()[:, None]
    padded = F.pad(road, (REACH, REACH, REACH, REACH))
    rows, cols = road.shape[-2:]
    shifted = [
        padded[..., REACH + dy * REACH : REACH + dy * REACH + rows, REACH + dx * REACH : REACH + dx * REACH + cols]
        for dy, dx in DIRECTIONS
    ]
    return road * torch.cat(shifted, dim=1)


class RoadTask(SegmentationTask):
    network: RoadNet | HourglassRoadNet

    def __init__(
        self,
        network: RoadNet | HourglassRoadNet,
        num_classes: int,
        lr: float,
        loss: LossOptions,
        freeze: bool,
        model_type: str,
        bin_size: int,
    ) -> None:
        encoder = network.encoder if isinstance(network, RoadNet) else network.stem
        super().__init__(network, encoder, num_classes, lr, loss, freeze)
        self.model_type, self.bin_size = model_type, bin_size

    def _aux_loss(self, aux: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.model_type == "MULTITASK_ROADEXTRACTOR":
            target = orientation_target(labels, self.bin_size)
            return F.cross_entropy(aux.float(), target, ignore_index=PADDING_LABEL)
        return F.binary_cross_entropy_with_logits(aux.float(), connectivity_target(labels))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1].long()
        rows, cols = x.shape[-2:]
        padded, _, _ = pad_to_stride(x)
        # the stacked hourglass: the mean over its stacks' outputs (each stack supervised); linknet: its one output
        stages = self.network.stages(padded)
        loss = sum(
            (
                self._loss(seg[..., :rows, :cols], y) + AUX_WEIGHT * self._aux_loss(aux[..., :rows, :cols], y)
                for seg, aux in stages
            ),
            torch.zeros((), device=x.device),
        ) / len(stages)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        return loss

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        assert self.last_metrics is not None
        # arcgis.learn's dice for roads: the F1 of the road classes
        roads = self.last_metrics.f1[1:]
        self.log("dice", sum(roads) / max(len(roads), 1))
