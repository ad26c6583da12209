"""Object detection (FASTERRCNN, torchvision) on PASCAL_VOC_rectangles and KITTI_rectangles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk import pictures
from geotrain.training.data.augment import crop_origin
from geotrain.training.data.scan import Scan
from geotrain.training.fit import OneCycleTask, fit
from geotrain.training.job import Job
from geotrain.training.models import pretrained
from geotrain.training.models.registry import BuiltModel

Target = dict[str, np.ndarray]
MODEL_NAMES = {"FASTERRCNN": "FasterRCNN"}
# Small chips are enlarged to this many pixels before the network: the FPN's coarsest level needs room.
MIN_INPUT = 128


class DetectionChips(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """Chips with their boxes; training flips them (and a crop when chip_size is below the tile size)."""

    def __init__(self, scanned: Scan[Target], indices: Sequence[int], chip_size: int, augment: bool) -> None:
        self.scanned = scanned
        self.indices = list(indices)
        self.chip_size = chip_size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, target = self.scanned.sample(self.indices[i])
        boxes, labels = target["boxes"].copy(), target["labels"].copy()
        image, boxes, labels = self._crop(image, boxes, labels)
        rows, cols = image.shape[1:]
        if self.augment:
            if float(torch.rand(())) < 0.5:
                image = image[:, :, ::-1]
                boxes[:, [0, 2]] = cols - boxes[:, [2, 0]]
            if float(torch.rand(())) < 0.5:
                image = image[:, ::-1, :]
                boxes[:, [1, 3]] = rows - boxes[:, [3, 1]]
        x = torch.from_numpy(self.scanned.normalization.apply(np.ascontiguousarray(image)))
        return x, {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}

    def _crop(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
        rows, cols = image.shape[1:]
        size = self.chip_size
        if rows <= size and cols <= size:
            return image, boxes, labels
        top, left = crop_origin(rows, cols, size, random=self.augment)
        image = image[:, top : top + size, left : left + size]
        moved = boxes - np.array([left, top, left, top], dtype=np.float32)
        moved[:, [0, 2]] = moved[:, [0, 2]].clip(0, image.shape[2])
        moved[:, [1, 3]] = moved[:, [1, 3]].clip(0, image.shape[1])
        keep = ((moved[:, 2] - moved[:, 0]) >= 1) & ((moved[:, 3] - moved[:, 1]) >= 1)
        return image, moved[keep], labels[keep]


def collate(batch: list[Any]) -> tuple[Any, ...]:
    """Detection batches are lists: chips may differ in size and carry different numbers of boxes."""
    return tuple(zip(*batch, strict=True))


def build_fasterrcnn(
    backbone: str, bands: int, num_classes: int, scheme: str, input_size: int, freeze: bool
) -> BuiltModel:
    arch = backbone.lower()
    weights = pretrained.backbone_weights(arch, bands, scheme)
    # FrozenBatchNorm keeps ImageNet statistics; a backbone starting from scratch needs BatchNorm that learns
    norm_layer = FrozenBatchNorm2d if weights.state is not None else nn.BatchNorm2d
    trainable = 0 if (freeze and weights.state is not None) else 5
    fpn = resnet_fpn_backbone(backbone_name=arch, weights=None, norm_layer=norm_layer, trainable_layers=trainable)
    body: nn.Module = fpn.body
    if bands != 3:
        old = body.conv1
        assert isinstance(old, nn.Conv2d)
        body.conv1 = nn.Conv2d(bands, old.out_channels, 7, 2, 3, bias=False)
        body.conv1.requires_grad_(trainable > 0)
    if weights.state is not None:
        pretrained.load_into(body, weights, arch)
    anchors = AnchorGenerator(sizes=((16,), (32,), (64,), (128,), (256,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    # torchvision's proposal counts suit 800 px photographs; a 128 px chip holds a few objects, and every
    # proposal costs a pass through the 12M-weight box head: scale them with the chip's area
    area = input_size * input_size
    network = FasterRCNN(
        fpn, num_classes=num_classes, rpn_anchor_generator=anchors, min_size=input_size, max_size=input_size * 4,
        rpn_pre_nms_top_n_train=min(2000, max(256, area // 32)),
        rpn_post_nms_top_n_train=min(2000, max(128, area // 64)),
        rpn_pre_nms_top_n_test=min(1000, max(128, area // 64)),
        rpn_post_nms_top_n_test=min(1000, max(64, area // 256)),
        box_batch_size_per_image=min(512, max(32, area // 256)),
        # the data sets normalise with the export's statistics already
        image_mean=[0.0] * bands, image_std=[1.0] * bands,
    )  # fmt: skip
    return BuiltModel(network, body, weights.source, weights.notes)


@dataclass
class DetectionMetrics:
    map50: float
    per_class: dict[int, float]  # class index -> AP@0.5


class DetectionTask(OneCycleTask):
    def __init__(self, network: FasterRCNN, lr: float) -> None:
        super().__init__()
        self.network = network
        self.lr = lr
        self.average_precision = MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True)
        self.last_metrics: DetectionMetrics | None = None

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out: list[dict[str, torch.Tensor]] = self.network(images)
        return out

    def training_step(self, batch: tuple[Any, Any], batch_idx: int) -> torch.Tensor:
        images, targets = list(batch[0]), list(batch[1])
        loss = sum(self.network(images, targets).values())
        assert isinstance(loss, torch.Tensor)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.average_precision.reset()

    def validation_step(self, batch: tuple[Any, Any], batch_idx: int) -> None:
        images, targets = list(batch[0]), list(batch[1])
        # torchvision computes losses only in training mode; BatchNorm stays in eval so validation leaves no trace
        self.network.train()
        for module in self.network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        with torch.no_grad():
            loss = sum(self.network(images, targets).values())
        self.network.eval()
        self.log("valid_loss", loss, on_step=False, on_epoch=True, batch_size=len(images))
        self.average_precision.update(self.network(images), targets)

    def on_validation_epoch_end(self) -> None:
        result = self.average_precision.compute()
        classes = result["classes"].flatten().tolist()
        per_class = result["map_per_class"].flatten().tolist()
        metrics = DetectionMetrics(
            max(float(result["map"]), 0.0),  # -1 means "no boxes to score": nothing was found
            {int(c): max(float(ap), 0.0) for c, ap in zip(classes, per_class, strict=False)},
        )
        self.last_metrics = metrics
        self.log("average_precision", metrics.map50)


def train(job: Job) -> dict[str, Any]:
    params, export, progress = job.params, job.export, job.progress
    _, scanned, foreground = job.scan_labels("box")
    train_idx, valid_idx = job.split(scanned)
    first, _ = scanned.sample(0)
    tile = export.tile_size or (first.shape[1], first.shape[2])
    chip_size = params.crop_size or min(tile)
    input_size = params.resize_to or max(chip_size, MIN_INPUT)
    augment = params.data_augmentation != "NONE"
    train_set = DetectionChips(scanned, train_idx, chip_size, augment)
    valid_set = DetectionChips(scanned, valid_idx, chip_size, False)

    use_gpu = job.use_gpu()
    built = build_fasterrcnn(
        params.backbone,
        scanned.num_bands,
        len(foreground) + 1,
        params.weight_init_scheme,
        input_size,
        params.freeze_model,
    )
    job.announce_model(built.notes, built.pretrained_from is not None)
    assert isinstance(built.network, FasterRCNN)
    task = DetectionTask(built.network, params.learning_rate or 1e-3)
    options = job.fit_options(use_gpu, scanned)
    result = fit(task, train_set, valid_set, options, job.on_epoch, progress.info, progress.warn, collate_fn=collate)
    job.report_fit(result)

    metrics: DetectionMetrics = result.metrics
    per_class_ap = {c.name: metrics.per_class.get(i, 0.0) for i, c in enumerate(foreground, start=1)}
    emd = job.model_emd("ObjectDetection", MODEL_NAMES[params.model_type], scanned, chip_size, result)
    emd["ModelParameters"]["input_size"] = input_size
    emd.update(
        {
            "average_precision_score": per_class_ap,
            "mAP": emd_writer.metric_text(metrics.map50),
            "Threshold": 0.5,
            "NMSOverlap": 0.5,
        }
    )
    return job.write_package(
        emd,
        built.network.state_dict(),
        result,
        _show_results(task, valid_set),
        [
            ("Model", MODEL_NAMES[params.model_type]),
            ("Backbone", params.backbone.lower()),
            ("Learning rate", f"{result.lr:.4e}"),
            ("Average Precision Score (mAP@0.5)", f"{metrics.map50:.4f}"),
            ("Epochs", str(len(result.history))),
        ],
        {name: {"precision": ap, "recall": float("nan"), "f1": float("nan")} for name, ap in per_class_ap.items()},
        f"mAP@0.5 {metrics.map50:.4f}",
    )


def _show_results(task: DetectionTask, valid_set: DetectionChips) -> bytes:
    task.eval()
    device = next(task.parameters()).device
    images, truths, predictions = [], [], []
    with torch.no_grad():
        for i in range(min(4, len(valid_set))):
            x, target = valid_set[i]
            pred = task([x.to(device)])[0]
            keep = pred["scores"] >= 0.5
            images.append(x.numpy())  # the chip as trained on (cropped), stretched for display
            truths.append(target["boxes"].numpy())
            predictions.append(pred["boxes"][keep].cpu().numpy())
    return pictures.detection_results(images, truths, predictions)
