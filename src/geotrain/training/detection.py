"""Object detection (FASTERRCNN, RETINANET, SSD, YOLOV3, DETREG, MMDETECTION) on PASCAL_VOC_rectangles and
KITTI_rectangles, and instance segmentation (MASKRCNN) on RCNN_Masks: detectors with torchvision's interface, one
training loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torchmetrics.detection import MeanAveragePrecision

from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk import pictures
from geotrain.dlpk.prf.geotrain_networks import MMDetNet, filter_detections
from geotrain.task import catalog
from geotrain.training.data.augment import Augmenter, crop_origin
from geotrain.training.data.readers import boxes_of_masks
from geotrain.training.data.scan import Scan
from geotrain.training.fit import OneCycleTask, fit
from geotrain.training.job import CHECK_THRESHOLD, Job
from geotrain.training.models import detectors, yolo

Target = dict[str, np.ndarray]
MODEL_NAMES = {"FASTERRCNN": "FasterRCNN", "RETINANET": "RetinaNet", "SSD": "SingleShotDetector",
               "MASKRCNN": "MaskRCNN", "YOLOV3": "YOLOv3", "DETREG": "DETReg",
               "MMDETECTION": "MMDetection"}  # fmt: skip
# One-stage detectors trained from scratch blow up in their first epochs without a cap on the gradient
# norm; 35 is what mmdetection's RetinaNet and YOLOv3 recipes use.
CLIPPED = {"RETINANET": 35.0, "YOLOV3": 35.0, "DETREG": 0.1, "MMDETECTION": 35.0}  # DETR's own recipe clips at 0.1
# Small chips are enlarged to this many pixels before the network: the FPN's coarsest level needs room.
MIN_INPUT = 128


class DetectionChips(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """Chips with their boxes (and instance masks, for MASKRCNN); training flips them (and a crop when
    chip_size is below the tile size), or applies the CUSTOM or FILE transforms instead."""

    def __init__(
        self,
        scanned: Scan[Target],
        indices: Sequence[int],
        chip_size: int,
        augment: bool,
        augmenter: Augmenter | None = None,
    ) -> None:
        self.scanned = scanned
        self.indices = list(indices)
        self.chip_size = chip_size
        self.augment = augment
        self.augmenter = augmenter

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, raw = self.scanned.sample(self.indices[i])
        target = {k: v.copy() for k, v in raw.items()}
        image, target = self._crop(image, target)
        rows, cols = image.shape[1:]
        masks = target.get("masks")
        if self.augmenter is not None:
            if masks is not None:
                image, target["masks"] = self.augmenter.pixels(image, masks)
            else:
                image, target["boxes"] = self.augmenter.boxes(image, target["boxes"])
            target = _kept(target)
        elif self.augment:
            flips = [int(v) for v in torch.randint(0, 2, (2,))]
            if flips[0]:
                image = image[:, :, ::-1]
                target["boxes"][:, [0, 2]] = cols - target["boxes"][:, [2, 0]]
                if masks is not None:
                    target["masks"] = target["masks"][:, :, ::-1]
            if flips[1]:
                image = image[:, ::-1, :]
                target["boxes"][:, [1, 3]] = rows - target["boxes"][:, [3, 1]]
                if masks is not None:
                    target["masks"] = target["masks"][:, ::-1, :]
        x = torch.from_numpy(self.scanned.normalization.apply(np.ascontiguousarray(image)))
        return x, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in target.items()}

    def _crop(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        rows, cols = image.shape[1:]
        size = self.chip_size
        if rows <= size and cols <= size:
            return image, target
        placed = self.augmenter.crop_offset(rows, cols, size) if self.augmenter is not None else None
        top, left = placed if placed is not None else crop_origin(rows, cols, size, random=self.augment)
        image = image[:, top : top + size, left : left + size]
        if "masks" in target:
            target["masks"] = target["masks"][:, top : top + size, left : left + size]
        else:
            moved = target["boxes"] - np.array([left, top, left, top], dtype=np.float32)
            moved[:, [0, 2]] = moved[:, [0, 2]].clip(0, image.shape[2])
            moved[:, [1, 3]] = moved[:, [1, 3]].clip(0, image.shape[1])
            target["boxes"] = moved
        return image, _kept(target)


def _kept(target: Target) -> Target:
    """The objects a crop or a turn left at least a pixel wide and high (masks give their boxes anew)."""
    if "masks" in target:
        target["boxes"] = boxes_of_masks(target["masks"])
    boxes = target["boxes"]
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    return {k: v[keep] for k, v in target.items()}


def collate(batch: list[Any]) -> tuple[Any, ...]:
    """Detection batches are lists: chips may differ in size and carry different numbers of boxes."""
    return tuple(zip(*batch, strict=True))


@dataclass
class DetectionMetrics:
    map50: float
    per_class: dict[int, float]  # class index -> AP@0.5


class DetectionTask(OneCycleTask):
    """Trains any torchvision detector; scores boxes (or, with ``masks``, instance masks) at IoU 0.5."""

    def __init__(self, network: nn.Module, lr: float, masks: bool, loss_weights: dict[str, float]) -> None:
        super().__init__()
        self.network = network
        self.lr = lr
        self.masks = masks
        self.loss_weights = loss_weights
        self.average_precision = MeanAveragePrecision(
            iou_type="segm" if masks else "bbox", iou_thresholds=[0.5], class_metrics=True
        )
        self.last_metrics: DetectionMetrics | None = None
        # the detector batches its images itself; its convolutions still run faster on channels-last weights
        # (bench/overhead.py: FASTERRCNN-ResNet50 0.31 -> 0.36 images/s on two CPU cores); mmcv's deformable
        # convolutions take contiguous tensors only
        self.channels_last = not isinstance(network, MMDetNet)

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out: list[dict[str, torch.Tensor]] = self.network(images)
        return out

    def _loss(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        losses: dict[str, torch.Tensor] = self.network(images, targets)
        loss = sum(value * self.loss_weights.get(name, 1.0) for name, value in losses.items())
        assert isinstance(loss, torch.Tensor)
        return loss

    def training_step(self, batch: tuple[Any, Any], batch_idx: int) -> torch.Tensor:
        images, targets = list(batch[0]), list(batch[1])
        loss = self._loss(images, targets)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(images), sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.average_precision.reset()

    def validation_step(self, batch: tuple[Any, Any], batch_idx: int) -> None:
        images, targets = list(batch[0]), list(batch[1])
        # torchvision computes losses only in training mode; BatchNorm and dropout stay in eval so that
        # validation leaves no trace and scores the network as it predicts
        self.network.train()
        for module in self.network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.modules.dropout._DropoutNd):
                module.eval()
        with torch.no_grad():
            loss = self._loss(images, targets)
        self.network.eval()
        self.log("valid_loss", loss, on_step=False, on_epoch=True, batch_size=len(images), sync_dist=True)
        predictions = self.network(images)
        if self.masks:
            predictions = [{**p, "masks": p["masks"][:, 0] >= 0.5} for p in predictions]
            targets = [{**t, "masks": t["masks"].bool()} for t in targets]
        self.average_precision.update(predictions, targets)

    def on_validation_epoch_end(self) -> None:
        result = self.average_precision.compute()
        classes = result["classes"].flatten().tolist()
        # absent when nothing was scored (no objects and no predictions in the validation chips)
        per_class = result.get("map_per_class", torch.zeros(0)).flatten().tolist()
        metrics = DetectionMetrics(
            max(float(result["map"]), 0.0),  # -1 means "no boxes to score": nothing was found
            {int(c): max(float(ap), 0.0) for c, ap in zip(classes, per_class, strict=False)},
        )
        self.last_metrics = metrics
        self.log("average_precision", metrics.map50)


def train(job: Job) -> None:
    params, export, progress = job.params, job.export, job.progress
    masks = params.model_type == "MASKRCNN"
    _, scanned, foreground = job.scan_labels("instance" if masks else "box")
    train_idx, valid_idx = job.split(scanned)
    first, _ = scanned.sample(0)
    tile = export.tile_size or (first.shape[1], first.shape[2])
    chip_size = job.crop_size() or min(tile)
    input_size = params.resize_to or max(chip_size, MIN_INPUT)
    arguments = dict(params.arguments)
    if params.model_type == "DETREG":
        input_size = detectors.detr_input_size(input_size)
    if params.model_type == "YOLOV3":
        input_size = detectors.yolo_input_size(input_size)
        if not arguments.get("anchors"):
            sizes = _box_sizes(scanned, train_idx, input_size / chip_size)
            arguments["anchors"] = _fitted_anchors(sizes, progress.info)
    if params.model_type == "SSD" and not arguments.get("grids"):
        version = int(arguments.get("ssd_version", detectors.SSD_VERSION))
        fitted = version == 2
        sizes = _box_sizes(scanned, train_idx, 1.0) if fitted else np.zeros((0, 2))
        arguments["grids"] = _fitted_grids(sizes, chip_size, progress.info) if fitted else detectors.SSD_GRIDS
    augment = params.data_augmentation != "NONE"
    train_augmenter, valid_augmenter = job.augmenters(scanned.normalization)
    train_set = DetectionChips(scanned, train_idx, chip_size, augment, train_augmenter)
    valid_set = DetectionChips(scanned, valid_idx, chip_size, False, valid_augmenter)

    use_gpu = job.use_gpu()
    built = detectors.build_detector(
        params.model_type,
        params.backbone,
        scanned.num_bands,
        len(foreground) + 1,
        params.weight_init_scheme,
        input_size,
        params.freeze_model,
        arguments,
    )
    job.announce_model(built.network, built.notes, built.pretrained_from is not None)
    factor = params.argument("location_loss_factor", None)
    weights = {} if factor is None else {"bbox_regression": float(factor), "classification": 1.0 - float(factor)}
    task = DetectionTask(built.network, params.learning_rate or 1e-3, masks, weights)
    task.gradient_clip = CLIPPED.get(params.model_type)
    options = job.fit_options(use_gpu, scanned)
    result = fit(task, train_set, valid_set, options, job.on_epoch, progress.info, progress.warn, collate_fn=collate)
    job.report_fit(result)
    if not job.leader:
        return  # the package is rank 0's to write

    metrics: DetectionMetrics = result.metrics
    per_class_ap = {c.name: metrics.per_class.get(i, 0.0) for i, c in enumerate(foreground, start=1)}
    kind = "InstanceDetection" if masks else "ObjectDetection"
    emd = job.model_emd(kind, MODEL_NAMES[params.model_type], scanned, chip_size, result)
    emd["ModelParameters"]["input_size"] = input_size
    emd.update(
        {
            "average_precision_score": per_class_ap,
            "mAP": emd_writer.metric_text(metrics.map50),
            "Threshold": 0.5,
            "NMSOverlap": 0.5,
            **_model_keys(params.model_type, params.backbone, arguments),
        }
    )
    if params.model_type == "RETINANET":
        emd["ModelParameters"]["scales"] = params.argument("scales", detectors.RETINANET_SCALES)
        emd["ModelParameters"]["ratios"] = params.argument("ratios", detectors.RETINANET_RATIOS)
    if masks:
        emd["ModelParameters"]["pointrend"] = bool(params.argument("pointrend", False))
    if params.model_type == "DETREG":
        emd["ModelParameters"]["queries"] = int(arguments.get("queries", detectors.DETR_QUERIES))
    if isinstance(built.network, MMDetNet):
        emd["ModelParameters"]["mmdet_model"] = built.network.config
        emd["ModelParameters"]["model"] = catalog.openmmlab_model(params.model_type, arguments)
    if params.model_type == "YOLOV3":
        emd["ModelParameters"]["anchors"] = [list(a) for a in arguments["anchors"]]
        emd["ModelParameters"]["n_bands"] = scanned.num_bands
    metric_name = "mask" if masks else "box"
    job.write_package(
        emd,
        built.network.state_dict(),
        result,
        _show_results(task, valid_set),
        [
            ("Model", MODEL_NAMES[params.model_type]),
            ("Backbone", params.backbone.lower()),
            ("Learning rate", f"{result.lr:.4e}"),
            (f"Average Precision Score ({metric_name} mAP@0.5)", f"{metrics.map50:.4f}"),
            ("Epochs", str(len(result.history))),
        ],
        {name: {"precision": ap, "recall": float("nan"), "f1": float("nan")} for name, ap in per_class_ap.items()},
        f"mAP@0.5 {metrics.map50:.4f}",
    )
    names = [c.name for c in foreground]
    job.check_detector(*_package_check(task, valid_set, names, float(emd["NMSOverlap"])))


def _package_check(
    task: DetectionTask, valid_set: DetectionChips, names: list[str], overlap: float
) -> tuple[np.ndarray, list[tuple[str, float, list[float]]]]:
    """A validation chip's raw pixels and the trained model's detections on it, after the check's threshold
    and the EMD's NMS overlap, as the inference function applies them."""
    image, target = valid_set.scanned.sample(valid_set.indices[0])
    image, _ = valid_set._crop(image, {k: v.copy() for k, v in target.items()})
    x = torch.from_numpy(valid_set.scanned.normalization.apply(np.ascontiguousarray(image)))
    task.eval()
    with torch.no_grad():
        found = task([x.to(next(task.parameters()).device)])[0]
    found = filter_detections(found, CHECK_THRESHOLD, overlap)
    expected = [
        (names[int(label) - 1], float(score), [float(v) for v in box])
        for box, score, label in zip(found["boxes"], found["scores"], found["labels"], strict=True)
    ]
    return np.ascontiguousarray(image), expected


def _box_sizes(scanned: Scan[Target], indices: Sequence[int], scale: float) -> np.ndarray:
    """(width, height) of the training boxes (of up to 2000 chips), times ``scale``."""
    sizes = [
        (target["boxes"][:, 2:] - target["boxes"][:, :2]) * scale
        for target in (scanned.sample(i)[1] for i in indices[:2000])
    ]
    return np.concatenate(sizes) if sizes else np.zeros((0, 2))


def _fitted_anchors(sizes: np.ndarray, info: Callable[[str], None]) -> list[tuple[float, float]]:
    """YOLOv3 anchors fitted to the training boxes (as the network sees them), as arcgis.learn fits them;
    the published COCO anchors when there are too few boxes to fit nine."""
    try:
        anchors = yolo.kmeans_anchors(sizes)
    except ValueError as exc:
        info(f"YOLOv3 anchors: {exc}; using the published COCO anchors.")
        return list(yolo.COCO_ANCHORS)
    info(f"YOLOv3 anchors fitted to the training boxes: {anchors}.")
    return anchors


def _fitted_grids(sizes: np.ndarray, chip_size: int, info: Callable[[str], None]) -> list[int]:
    """SSD grids for ssd_version 2, as arcgis.learn chooses them: k-means over the box sizes (three
    clusters); a cluster of boxes ``s`` pixels across is served by a ``chip_size / s`` grid."""
    try:
        centres = yolo.kmeans_anchors(sizes, k=3)
    except ValueError as exc:
        info(f"SSD grids: {exc}; using ssd_version 1's {detectors.SSD_GRIDS}.")
        return list(detectors.SSD_GRIDS)
    grids = sorted({min(32, max(1, round(chip_size / float(np.sqrt(w * h))))) for w, h in centres}, reverse=True)
    info(f"SSD grids fitted to the training boxes: {grids}.")
    return grids


def _model_keys(model_type: str, backbone: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The EMD keys arcgis.learn writes for this detector (dlpk-format.md's table)."""
    match model_type:
        case "SSD":
            return {
                "Grids": arguments.get("grids") or detectors.SSD_GRIDS,
                "Zooms": arguments.get("zooms", detectors.SSD_ZOOMS),
                "Ratios": arguments.get("ratios", detectors.SSD_RATIOS),
                "SSDVersion": int(arguments.get("ssd_version", detectors.SSD_VERSION)),
                "backbone": backbone.lower(),
            }
        case "MASKRCNN":
            return {"MaskRCNNkwargs": {k: v for k, v in arguments.items() if k in detectors.MASKRCNN_KEYWORDS}}
    return {}


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
