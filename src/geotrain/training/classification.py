"""Object classification (FEATURE_CLASSIFIER) on Labeled_Tiles, MultiLabeled_Tiles and Imagenet."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchmetrics.classification import MulticlassConfusionMatrix, MultilabelStatScores

from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk import pictures
from geotrain.dlpk.prf.geotrain_networks import REID_PLANS, ReidNet
from geotrain.dlpk.prf.GeotrainObjectClassifier import THRESHOLD, describe
from geotrain.training.data.augment import Augmenter
from geotrain.training.data.scan import Scan
from geotrain.training.fit import OneCycleTask, fit, freeze_except, mixed_loss
from geotrain.training.job import Job
from geotrain.training.metrics import SegmentationMetrics, from_confusion
from geotrain.training.models import trunks
from geotrain.training.models.registry import BuiltModel

MODEL_NAMES = {"FEATURE_CLASSIFIER": "FeatureClassifier", "DEEPSORT": "DeepSort"}
# the EMD's ModelType: DEEPSORT's crops are re-identified (tracking), not classified
MODEL_KINDS = {"FEATURE_CLASSIFIER": "ObjectClassification", "DEEPSORT": "ObjectTracking"}


class ClassificationChips(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Chips resized to one size (Variable_Size exports hold chips of many), flipped and turned in training,
    or put through the CUSTOM or FILE transforms instead (a crop first, where the chip is larger)."""

    def __init__(
        self, scanned: Scan[Any], indices: Sequence[int], size: int, augment: bool, augmenter: Augmenter | None = None
    ) -> None:
        self.scanned = scanned
        self.indices = list(indices)
        self.size = size
        self.augment = augment
        self.augmenter = augmenter

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.scanned.sample(self.indices[i])
        if self.augmenter is not None:
            rows, cols = image.shape[1:]
            placed = self.augmenter.crop_offset(rows, cols, self.size) if min(rows, cols) > self.size else None
            if placed is not None:
                image = image[:, placed[0] : placed[0] + self.size, placed[1] : placed[1] + self.size]
            image = self.augmenter.image(image)
        x = torch.from_numpy(self.scanned.normalization.apply(image))
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        if self.augment and self.augmenter is None:
            flip, turns = (int(v) for v in torch.randint(0, 4, (2,)))
            x = torch.rot90(x.flip(-1) if flip % 2 else x, turns, (-2, -1))
        return x.contiguous(), torch.as_tensor(label)


def _oversampling_weights(
    scanned: Scan[Any], indices: Sequence[int], num_classes: int, multi_label: bool
) -> list[float]:
    """A drawing weight per training chip: the inverse frequency of its class (of its rarest label, for
    multi-label chips), so every class is drawn about equally often."""
    labels = [np.asarray(scanned.sample(i)[1]) for i in indices]
    if multi_label:
        counts = np.sum(labels, axis=0).astype(np.float64)
        inverse = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        return [float((inverse * (label > 0)).max()) or 1.0 for label in labels]
    counts = np.bincount(np.array([int(label) for label in labels]), minlength=num_classes).astype(np.float64)
    return [1.0 / counts[int(label)] for label in labels]


def build_classifier(backbone: str, bands: int, num_classes: int, scheme: str) -> BuiltModel:
    if backbone.lower() in REID_PLANS:
        reid = ReidNet(backbone.lower(), bands, num_classes)
        note = f"{backbone} has no ImageNet weights: the re-identification network starts from random initialisation."
        return BuiltModel(reid, reid.classifier, None, [note])
    network, weights = trunks.classifier(backbone.lower(), bands, num_classes, scheme)
    head = network.get_submodule("fc" if hasattr(network, "fc") else "classifier")
    return BuiltModel(network, head, weights.source, weights.notes)


class ClassificationTask(OneCycleTask):
    def __init__(
        self,
        network: nn.Module,
        head: nn.Module,
        num_classes: int,
        multi_label: bool,
        lr: float,
        freeze: bool,
        mix: bool = False,
    ) -> None:
        super().__init__()
        self.network = network
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.lr = lr
        self.mix = mix
        self.channels_last = True
        if freeze:
            freeze_except(network, head)
        self.confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.stats = MultilabelStatScores(num_labels=num_classes, average=None)
        self.last_metrics: SegmentationMetrics | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.network(x)
        return out

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, y.float())
        return F.cross_entropy(logits, y.long())

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = mixed_loss(x, y, self, self._loss) if self.mix and len(x) > 1 else self._loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.confusion.reset()
        self.stats.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("valid_loss", self._loss(logits, y), on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        if self.multi_label:
            self.stats.update(logits.sigmoid(), y.long())
        else:
            self.confusion.update(logits.argmax(dim=1), y.long())

    def on_validation_epoch_end(self) -> None:
        if self.multi_label:
            # per label: true positives, false positives, true negatives, false negatives, support
            tp, fp, tn, fn, _ = self.stats.compute().cpu().double().unbind(-1)
            precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.zeros_like(tp))
            recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), torch.zeros_like(tp))
            f1 = torch.where(
                precision + recall > 0,
                2 * precision * recall / (precision + recall).clamp(min=1e-12),
                torch.zeros_like(tp),
            )
            accuracy = float((tp + tn).sum() / (tp + tn + fp + fn).sum().clamp(min=1))
            metrics = SegmentationMetrics(
                accuracy, float(f1.mean()), precision.tolist(), recall.tolist(), f1.tolist(), []
            )
        else:
            metrics = from_confusion(self.confusion.compute().cpu())
        self.last_metrics = metrics
        self.log("accuracy", metrics.accuracy)


def train(job: Job) -> None:
    params, export, progress = job.params, job.export, job.progress
    reader, scanned, foreground = job.scan_labels("chip")
    multi_label = reader.kind == "MultiLabeled_Tiles"
    train_idx, valid_idx = job.split(scanned)
    size = job.chip_size(scanned)
    augment = params.data_augmentation != "NONE"
    train_augmenter, valid_augmenter = job.augmenters(scanned.normalization)
    train_set = ClassificationChips(scanned, train_idx, size, augment, train_augmenter)
    valid_set = ClassificationChips(scanned, valid_idx, size, False, valid_augmenter)

    use_gpu = job.use_gpu()
    built = build_classifier(params.backbone, scanned.num_bands, len(foreground), params.weight_init_scheme)
    freeze = job.announce_model(built.network, built.notes, built.pretrained_from is not None)
    task = ClassificationTask(
        built.network,
        built.encoder,
        len(foreground),
        multi_label,
        params.learning_rate or 1e-3,
        freeze,
        mix=bool(params.argument("mixup", False)),
    )
    weights = None
    if params.argument("oversample", False):
        weights = _oversampling_weights(scanned, train_idx, len(foreground), multi_label)
        progress.info("oversample: chips of rare classes are drawn more often (each class about equally).")
    options = job.fit_options(use_gpu, scanned)
    result = fit(
        task, train_set, valid_set, options, job.on_epoch, progress.info, progress.warn, sample_weights=weights
    )
    job.report_fit(result)
    if not job.leader:
        return  # the package is rank 0's to write

    m: SegmentationMetrics = result.metrics
    per_class = {
        c.name: {"precision": p, "recall": r, "f1": f}
        for c, p, r, f in zip(foreground, m.precision, m.recall, m.f1, strict=True)
    }
    emd = job.model_emd(MODEL_KINDS[params.model_type], MODEL_NAMES[params.model_type], scanned, size, result)
    emd.update(
        {
            "accuracy": emd_writer.metric_text(m.accuracy),
            "per_class_metrics": emd_writer.json_text(per_class),
            "MetaDataMode": export.metadata_format,
            "IsMultiLabel": multi_label,
            "CropSizeFixed": 0 if any(s != (size, size) for s in _sizes(scanned)) else 1,
        }
    )
    if isinstance(built.network, ReidNet):
        # what a tracker reads beside each object: its identity among these and its appearance descriptor
        emd["EmbeddingSize"] = REID_PLANS[params.backbone.lower()][2]
    job.write_package(
        emd,
        built.network.state_dict(),
        result,
        _show_results(task, valid_set, [c.name for c in foreground]),
        [
            ("Model", MODEL_NAMES[params.model_type]),
            ("Backbone", params.backbone.lower()),
            ("Learning rate", f"{result.lr:.4e}"),
            ("Accuracy", f"{m.accuracy:.4f}"),
            ("Epochs", str(len(result.history))),
        ],
        per_class,
        f"accuracy {m.accuracy:.4f}",
    )
    job.check_classifier(*_package_check(task, scanned, valid_idx, size, [c.name for c in foreground]))


def _package_check(
    task: ClassificationTask, scanned: Scan[Any], indices: Sequence[int], size: int, names: list[str]
) -> tuple[list[np.ndarray], list[tuple[str, str]]]:
    """Up to eight validation chips' raw pixels and the trained model's (label, confidence in percent) for
    each, described as the inference function describes them (at its default threshold)."""
    chosen = list(indices[:8])
    chips = ClassificationChips(scanned, chosen, size, False)
    blocks = [np.ascontiguousarray(scanned.sample(i)[0]) for i in chosen]
    task.eval()
    device = next(task.parameters()).device
    with torch.no_grad():
        logits = task(torch.stack([chips[j][0] for j in range(len(chosen))]).to(device)).float().cpu()
    probabilities = logits.sigmoid() if task.multi_label else logits.softmax(1)
    described = [describe(p.numpy(), names, task.multi_label, THRESHOLD) for p in probabilities]
    return blocks, [(label, str(confidence)) for label, confidence in described]


def _sizes(scanned: Scan[Any]) -> set[tuple[int, int]]:
    return {(s.shape[1], s.shape[2]) for s in (scanned.sample(i)[0] for i in range(min(len(scanned.items), 50)))}


def _show_results(task: ClassificationTask, valid_set: ClassificationChips, names: list[str]) -> bytes:
    task.eval()
    device = next(task.parameters()).device
    images, truths, found = [], [], []
    with torch.no_grad():
        for i in range(min(6, len(valid_set))):
            x, y = valid_set[i]
            logits = task(x[None].to(device))[0].cpu()
            if task.multi_label:
                truths.append(", ".join(n for n, v in zip(names, y.tolist(), strict=True) if v) or "-")
                found.append(
                    ", ".join(n for n, v in zip(names, (logits.sigmoid() >= 0.5).tolist(), strict=True) if v) or "-"
                )
            else:
                truths.append(names[int(y)])
                found.append(names[int(logits.argmax())])
            images.append(x.numpy())
    return pictures.classification_results(images, truths, found)
