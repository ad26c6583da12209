"""Edge detection (HED_EDGEDETECTOR, BDCN_EDGEDETECTOR) on Classified_Tiles: every labelled pixel, whatever
its class, is edge, as ArcGIS exports edges (field boundaries, shorelines) for these models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.aggregation import SumMetric

from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk.prf.geotrain_networks import EdgeNet, pad_to_stride
from geotrain.errors import TrainingError
from geotrain.training.data.classified_tiles import ClassMap, SegmentationChips, scan_segmentation
from geotrain.training.fit import OneCycleTask, freeze_except
from geotrain.training.job import Job
from geotrain.training.models.registry import build
from geotrain.training.segmentation import first_size, package_check, show_results

MODEL_NAMES = {"HED_EDGEDETECTOR": "HEDEdgeDetector", "BDCN_EDGEDETECTOR": "BDCNEdgeDetector"}
# a predicted edge this many pixels from a true one (and the other way round) counts as found, as arcgis.learn
# scores edges: a line drawn one pixel aside is not a miss
TOLERANCE = 3
COUNTS = ("correct", "pixels", "predicted", "predicted_near", "true", "true_near")


@dataclass(frozen=True)
class EdgeMetrics:
    accuracy: float
    precision: float
    recall: float
    f1: float


def balanced_loss(logits: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """HED's class-balanced binary cross-entropy: edge pixels weigh the share of the others, and the other way
    round, so the few edge pixels are not outvoted."""
    share = edges.mean().clamp(1e-3, 1 - 1e-3)
    weights = torch.where(edges > 0, 1 - share, share)
    return F.binary_cross_entropy_with_logits(logits.float(), edges, weight=weights) * 2


def _near(mask: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(mask.float(), 2 * TOLERANCE + 1, stride=1, padding=TOLERANCE) > 0


class EdgeTask(OneCycleTask):
    network: EdgeNet

    def __init__(self, network: EdgeNet, lr: float, freeze: bool) -> None:
        super().__init__()
        self.network = network
        self.encoder = network.encoder
        self.lr = lr
        self.channels_last = True
        # summed over the validation epoch (and over processes under DDP)
        self.counts = torch.nn.ModuleDict({name: SumMetric() for name in COUNTS})
        self.last_metrics: EdgeMetrics | None = None
        if freeze:
            freeze_except(network.encoder)

    def _count(self, name: str) -> SumMetric:
        return cast(SumMetric, self.counts[name])

    def _sides(self, x: torch.Tensor) -> list[torch.Tensor]:
        rows, cols = x.shape[-2:]
        padded, _, _ = pad_to_stride(x)
        return [side[..., :rows, :cols] for side in self.network.side_logits(padded)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self._sides(x)[-1]
        return torch.cat([torch.zeros_like(fused), fused], dim=1)

    def _loss(self, sides: list[torch.Tensor], edges: torch.Tensor) -> torch.Tensor:
        # every side output learns the edges, the fused one too (deep supervision)
        return torch.stack([balanced_loss(side, edges) for side in sides]).sum()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, edges = batch[0], (batch[1] > 0).float()[:, None]
        loss = self._loss(self._sides(x), edges)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        for name in COUNTS:
            self._count(name).reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, truth = batch[0], batch[1][:, None] > 0
        sides = self._sides(x)
        self.log(
            "valid_loss", self._loss(sides, truth.float()), on_step=False, on_epoch=True, batch_size=len(x),
            sync_dist=True,
        )  # fmt: skip
        found = sides[-1] > 0
        seen = {
            "correct": (found == truth).sum(), "pixels": truth.numel(),
            "predicted": found.sum(), "predicted_near": (found & _near(truth)).sum(),
            "true": truth.sum(), "true_near": (truth & _near(found)).sum(),
        }  # fmt: skip
        for name, value in seen.items():
            self._count(name).update(torch.as_tensor(value, dtype=torch.float64, device=x.device))

    def on_validation_epoch_end(self) -> None:
        n = {name: float(self._count(name).compute()) for name in COUNTS}
        precision = n["predicted_near"] / n["predicted"] if n["predicted"] else 0.0
        recall = n["true_near"] / n["true"] if n["true"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        self.last_metrics = EdgeMetrics(n["correct"] / max(n["pixels"], 1.0), precision, recall, f1)
        for name in ("accuracy", "precision", "recall"):
            self.log(name, getattr(self.last_metrics, name))
        self.log("f1_score", f1)


def train(job: Job) -> None:
    params, export, progress = job.params, job.export, job.progress
    values = [c.value for c in export.classes if c.value != 0]
    scanned, counts = scan_segmentation(export, ClassMap(values), job.reading)
    job.checked(scanned)
    edge_pixels = int(counts.per_class[1:].sum())
    if edge_pixels == 0:
        raise TrainingError(
            f"in_folder: no label pixel of the export is an edge (every label holds 0 only); {params.model_type} "
            "learns from labels whose edge pixels hold a class value.",
        )
    progress.info(f"Edges: {edge_pixels / max(int(counts.per_class.sum()), 1):.1%} of the labelled pixels.")
    train_idx, valid_idx = job.split(scanned)
    tile = export.tile_size or first_size(scanned)
    chip_size = job.crop_size() or min(tile)
    train_augmenter, valid_augmenter = job.augmenters(scanned.normalization)
    augment = params.data_augmentation != "NONE"
    edges = ClassMap(values)
    train_set = SegmentationChips(scanned, train_idx, chip_size, True, augment, edges, train_augmenter)
    valid_set = SegmentationChips(scanned, valid_idx, chip_size, False, False, edges, valid_augmenter)

    built = build(params.model_type, params.backbone, scanned.num_bands, 2, params.weight_init_scheme)
    assert isinstance(built.network, EdgeNet)
    freeze = job.announce_model(built.network, built.notes, built.pretrained_from is not None)
    task = EdgeTask(built.network, params.learning_rate or 1e-3, freeze)
    result = job.fit(task, train_set, valid_set, scanned)
    if not job.leader:
        return  # the package is rank 0's to write

    m: EdgeMetrics = result.metrics
    name = export.classes[0].name if len(values) == 1 else "Edge"
    emd = job.model_emd("ImageClassification", MODEL_NAMES[params.model_type], scanned, chip_size, result)
    emd.update(
        {
            # the package's function gives 1 where it finds an edge, 0 elsewhere
            "Classes": [{"Value": 1, "Name": name, "Color": [255, 255, 255]}],
            "accuracy": emd_writer.metric_text(m.accuracy),
            "precision": emd_writer.metric_text(m.precision),
            "recall": emd_writer.metric_text(m.recall),
            "f1_score": emd_writer.metric_text(m.f1),
            "edge_tolerance_pixels": TOLERANCE,
            "SupportsVariableTileSize": True,
            "ExportChipSize": [tile[0], tile[1]],
        }
    )
    job.write_package(
        emd,
        built.network.state_dict(),
        result,
        show_results(
            task,
            valid_set,
            np.array([(0, 0, 0), (255, 255, 255)], dtype=np.float64),
            truth=lambda y: (y > 0).astype(np.int64),  # every labelled pixel is edge
        ),
        [
            ("Model", MODEL_NAMES[params.model_type]),
            ("Backbone", params.backbone.lower()),
            ("Learning rate", f"{result.lr:.4e}"),
            ("Accuracy", f"{m.accuracy:.4f}"),
            (f"Precision (within {TOLERANCE} px)", f"{m.precision:.4f}"),
            (f"Recall (within {TOLERANCE} px)", f"{m.recall:.4f}"),
            ("F1", f"{m.f1:.4f}"),
            ("Epochs", str(len(result.history))),
        ],
        {name: {"precision": m.precision, "recall": m.recall, "f1": m.f1}},
        f"accuracy {m.accuracy:.4f}, edge F1 {m.f1:.4f}",
    )
    job.check_package(*package_check(task, valid_set, ClassMap([1])))
