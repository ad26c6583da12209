"""Panoptic segmentation (MAXDEEPLAB) on Panoptic_Segmentation exports.

Segments are the instances of ``labels2/<class>/`` (things) and, for every other class of the semantic label,
its pixels outside the instances (stuff). ``geotrain_networks.MaskNet``'s queries are matched one to one to
the segments of each chip at the least total cost of class certainty and mask dice (the Hungarian algorithm), as
MaX-DeepLab matches them; the loss is the class cross-entropy of every query ("no segment" for the unmatched)
and the matched masks' BCE and dice. Validation scores panoptic quality (PQ: IoU > 0.5 matches per class,
NoData pixels left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchmetrics import Metric

from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk import pictures
from geotrain.dlpk.prf.geotrain_networks import MaskNet, pad_to_stride, panoptic_maps
from geotrain.errors import TrainingError
from geotrain.training.data.readers import reader_for
from geotrain.training.data.scan import Scan, scan
from geotrain.training.fit import OneCycleTask, freeze_except
from geotrain.training.job import Job, class_colors
from geotrain.training.matching import hungarian as match
from geotrain.training.models.registry import with_weights

N_MASKS = 30  # arcgis.learn's n_masks
NO_SEGMENT_WEIGHT = 0.1  # the "no segment" class's share in the class loss, as DETR and MaX-DeepLab weigh it

Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def segments(target: dict[str, np.ndarray], things: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """A chip's segments: (class indices, masks): its instances, then each stuff class's pixels outside them."""
    semantic, masks, labels = target["semantic"], target["masks"].astype(bool), target["labels"]
    covered = masks.any(0) if len(masks) else np.zeros(semantic.shape, bool)
    stuff = [c for c in np.unique(semantic) if c > 0 and int(c) not in things]
    regions = [(semantic == c) & ~covered for c in stuff]
    kept = [(int(c), m) for c, m in zip(stuff, regions, strict=True) if m.any()]
    classes = np.array([*labels.tolist(), *(c for c, _ in kept)], dtype=np.int64)
    stacked = np.concatenate([masks, np.array([m for _, m in kept], bool).reshape(-1, *semantic.shape)])
    return classes, stacked


class PanopticChips(Dataset[Sample]):
    """Whole chips (flipped and turned in training, their segments alike): normalized pixels, segment classes,
    segment masks and the semantic label (whose 0 is NoData, left out of scoring)."""

    def __init__(self, scanned: Scan[Any], indices: Sequence[int], augment: bool, things: set[int]) -> None:
        self.scanned, self.indices, self.augment, self.things = scanned, list(indices), augment, things

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:
        image, target = self.scanned.sample(self.indices[i])
        classes, masks = segments(target, self.things)
        semantic = target["semantic"]
        if self.augment:
            flip, turns = (int(v) for v in torch.randint(0, 4, (2,)))
            if flip % 2:
                image, masks, semantic = image[..., ::-1], masks[..., ::-1], semantic[..., ::-1]
            image, masks, semantic = (np.rot90(a, turns, (-2, -1)) for a in (image, masks, semantic))
        x = torch.from_numpy(self.scanned.normalization.apply(image))
        return (
            x,
            torch.from_numpy(classes),
            torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(semantic, dtype=np.int64)),
        )


def collate(batch: list[Sample]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    return (
        torch.stack([b[0] for b in batch]),
        [b[1] for b in batch],
        [b[2] for b in batch],
        torch.stack([b[3] for b in batch]),
    )


def _dice_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - dice of each row of ``pred`` (probabilities) with the same row of ``target``."""
    return 1 - (2 * (pred * target).sum(-1) + 1) / (pred.sum(-1) + target.sum(-1) + 1)


class PanopticCounts(Metric):
    """Per class: matched segments (IoU > 0.5), their IoU summed, unmatched predictions and targets."""

    full_state_update = False

    def __init__(self, classes: int) -> None:
        super().__init__()
        for name in ("tp", "fp", "fn", "iou"):
            self.add_state(name, torch.zeros(classes + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self, maps: torch.Tensor, classes: list[torch.Tensor], masks: list[torch.Tensor], semantic: torch.Tensor
    ) -> None:
        found_counts = {name: [0.0] * len(getattr(self, name)) for name in ("tp", "fp", "fn", "iou")}
        tp, fp, fn, iou = (found_counts[n] for n in ("tp", "fp", "fn", "iou"))
        for found, wanted, wanted_masks, label in zip(maps, classes, masks, semantic, strict=True):
            scored = label > 0
            preds = [
                (int(found[0][found[1] == s][0]), (found[1] == s) & scored) for s in found[1].unique().tolist() if s > 0
            ]
            used: set[int] = set()
            for c, truth in ((int(c), m.bool() & scored) for c, m in zip(wanted, wanted_masks, strict=True)):
                best, at = 0.0, -1
                for j, (pc, pred) in enumerate(preds):
                    union = float((truth | pred).sum())
                    overlap = float((truth & pred).sum()) / union if union and pc == c and j not in used else 0.0
                    if overlap > best:
                        best, at = overlap, j
                if best > 0.5:  # at most one prediction can overlap a segment this much
                    used.add(at)
                    tp[c] += 1
                    iou[c] += best
                else:
                    fn[c] += 1
            for j, (pc, pred) in enumerate(preds):
                if j not in used and bool(pred.any()):
                    fp[pc] += 1
        for name, counted in found_counts.items():
            state = getattr(self, name)
            state += torch.tensor(counted, dtype=state.dtype, device=state.device)

    def compute(self) -> torch.Tensor:
        """Each class's PQ (NaN where it has no segment, predicted or true)."""
        tp, fp, fn, iou = (getattr(self, n) for n in ("tp", "fp", "fn", "iou"))
        denominator = tp + 0.5 * fp + 0.5 * fn
        quality: torch.Tensor = torch.where(
            denominator > 0, iou / denominator.clamp(min=1e-12), torch.full_like(iou, float("nan"))
        )
        return quality


@dataclass
class PanopticMetrics:
    pq: float  # over the classes that have segments
    per_class: list[float]  # NaN: no segment of the class, true or predicted


class PanopticTask(OneCycleTask):
    network: MaskNet

    def __init__(self, network: MaskNet, classes: int, lr: float, freeze: bool) -> None:
        super().__init__()
        self.network, self.classes, self.lr, self.channels_last = network, classes, lr, True
        if freeze:
            freeze_except(network.encoder)
        weights = torch.ones(classes + 1)
        weights[-1] = NO_SEGMENT_WEIGHT
        self.register_buffer("class_weights", weights, persistent=False)
        self.counts = PanopticCounts(classes)
        self.last_metrics: PanopticMetrics | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.network(x)
        return out

    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = x.shape[-2:]
        padded, _, _ = pad_to_stride(x)
        logits, masks = self.network.both(padded)
        return logits.float(), masks[..., :rows, :cols].float()

    def _loss(
        self, logits: torch.Tensor, masks: torch.Tensor, classes: list[torch.Tensor], wanted: list[torch.Tensor]
    ) -> torch.Tensor:
        total = logits.new_zeros(())
        weights: torch.Tensor = self.class_weights  # type: ignore[assignment]  # a registered buffer
        for b, (c, m) in enumerate(zip(classes, wanted, strict=True)):
            target = torch.full((logits.shape[1],), self.classes, dtype=torch.long, device=logits.device)
            if len(c):
                pred = masks[b].sigmoid().flatten(1)
                truth = m.flatten(1)
                dice = 1 - (2 * pred @ truth.T + 1) / (pred.sum(1)[:, None] + truth.sum(1)[None] + 1)
                q, s = match(dice - logits[b].softmax(-1)[:, c - 1])
                target[q] = c[s] - 1
                chosen = masks[b][q].flatten(1)
                total = (
                    total
                    + F.binary_cross_entropy_with_logits(chosen, truth[s])
                    + _dice_loss(chosen.sigmoid(), truth[s]).mean()
                )
            total = total + F.cross_entropy(logits[b], target, weight=weights)
        return total / len(classes)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, classes, wanted, _ = batch
        loss = self._loss(*self._outputs(x), classes, wanted)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.counts.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, classes, wanted, semantic = batch
        logits, masks = self._outputs(x)
        self.log("valid_loss", self._loss(logits, masks, classes, wanted), on_step=False, on_epoch=True,
                 batch_size=len(x), sync_dist=True)  # fmt: skip
        self.counts.update(panoptic_maps(logits, masks), classes, wanted, semantic)

    def on_validation_epoch_end(self) -> None:
        per_class = self.counts.compute()[1:].cpu()
        seen = per_class[~per_class.isnan()]
        self.last_metrics = PanopticMetrics(float(seen.mean()) if len(seen) else 0.0, per_class.tolist())
        self.log("panoptic_quality", self.last_metrics.pq)


def train(job: Job) -> None:
    params, export, progress = job.params, job.export, job.progress
    sizes: set[tuple[int, ...]] = set()
    things: set[int] = set()

    def observe(image: np.ndarray, target: dict[str, np.ndarray]) -> None:
        # while the chips are read once: their sizes, and the classes that have instances (the things)
        sizes.add(tuple(image.shape[1:]))
        things.update(int(label) for label in target["labels"])

    scanned = job.checked(scan(export, reader_for(export).load, job.reading, observe=observe))
    foreground = [c for c in export.classes if c.value != 0]
    if len(sizes) > 1:
        raise TrainingError(f"MAXDEEPLAB trains on chips of one size; this export holds {sorted(sizes)}.")
    if not things:
        raise TrainingError("The export has no instance in labels2/: MAXDEEPLAB needs things to segment.")
    names = [c.name for i, c in enumerate(foreground, start=1) if i in things]
    progress.info(f"Panoptic segments: instances of {', '.join(names)}; the other classes as stuff.")
    train_idx, valid_idx = job.split(scanned)
    augment = params.data_augmentation != "NONE"
    train_set = PanopticChips(scanned, train_idx, augment, things)
    valid_set = PanopticChips(scanned, valid_idx, False, things)

    queries = int(params.argument("n_masks", N_MASKS))
    network = MaskNet(params.backbone.lower(), scanned.num_bands, len(foreground), queries)
    arch = params.backbone.lower()
    built = with_weights(network, network.encoder, arch, scanned.num_bands, params.weight_init_scheme)
    freeze = job.announce_model(network, built.notes, built.pretrained_from is not None)
    task = PanopticTask(network, len(foreground), params.learning_rate or 1e-3, freeze)
    result = job.fit(task, train_set, valid_set, scanned, collate)
    if not job.leader:
        return  # the package is rank 0's to write

    m: PanopticMetrics = result.metrics
    size = next(iter(sizes))
    emd = job.model_emd("PanopticSegmenter", "MaXDeepLab", scanned, min(size), result)
    emd["ModelParameters"]["n_masks"] = queries
    per_class = {c.name: {"panoptic_quality": q} for c, q in zip(foreground, m.per_class, strict=True) if q == q}
    emd.update(
        {
            "panoptic_quality": emd_writer.metric_text(m.pq),
            "per_class_metrics": emd_writer.json_text(per_class),
            "Panoptic_Segmentation_Instance_Classes": [
                {"Value": c.value, "Name": c.name} for i, c in enumerate(foreground, start=1) if i in things
            ],
            "MetaDataMode": export.metadata_format,
        }
    )
    values = np.asarray([0, *(c.value for c in foreground)], dtype=np.int64)
    task.eval()
    device = next(task.parameters()).device
    images, truths, found = [], [], []
    with torch.no_grad():
        for i in range(min(4, len(valid_set))):
            x, _, _, semantic = valid_set[i]
            images.append(scanned.sample(valid_idx[i])[0])
            truths.append(semantic.numpy())
            found.append(task(x[None].to(device))[0, 0].cpu().numpy())
    colors = np.array([(0, 0, 0), *class_colors(foreground)], dtype=np.float64)
    job.write_package(
        emd,
        network.state_dict(),
        result,
        pictures.show_results(images, truths, found, colors),
        [
            ("Model", "MaXDeepLab"),
            ("Backbone", arch),
            ("Learning rate", f"{result.lr:.4e}"),
            ("Panoptic quality", f"{m.pq:.4f}"),
            ("Epochs", str(len(result.history))),
        ],
        {},  # the report's table is of precision, recall and F1; the EMD has each class's PQ
        f"panoptic quality {m.pq:.4f}",
    )
    raw = np.ascontiguousarray(images[0])
    with torch.no_grad():
        maps = task(valid_set[0][0][None].to(device))[0].cpu().numpy()
    job.check_package(raw, np.stack([values[maps[0]], maps[1]]))
