"""Object tracking (SIAMMASK) on RCNN_Masks exports of video frames.

A track is one object through the frames: the same instance id in the same class folder (``labels/<class>/``),
frames taken in the order of their names, as arcgis.learn reads Pro's tracking exports. Each training sample
pairs an exemplar, cut around the object in one frame (SiamFC's crop: the box and its context), with a search
window around the same object in a frame at most ``frame_range`` frames away, shifted and scaled at random so
that the object is anywhere in it. ``geotrain_networks.SiamMaskNet`` is trained as SiamMask is: anchors over
IoU 0.6 are the object and under 0.3 background (binary cross-entropy, a half each), the positive anchors'
box offsets (smooth L1), and at every location with a positive anchor the mask of the exemplar-sized window
centred there, from the refinement module (binary cross-entropy); the losses weigh 1, 1.2 and 36, as
SiamMask's training weighs them.
Validation scores the mean IoU of the mask found at the best-scored location with the object's mask (mIOU).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchmetrics import MeanMetric
from torchvision.ops import box_convert, box_iou, roi_align

from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk import pictures
from geotrain.dlpk.prf.geotrain_networks import (
    SIAM_RATIOS,
    SIAM_SMALLEST,
    SIAM_STRIDE,
    SIAM_TRACKING,
    SiamMaskNet,
    SiamOutputs,
    SiamTracker,
    context_side,
    window_crop,
)
from geotrain.errors import TrainingError
from geotrain.training.data.readers import reader_for
from geotrain.training.data.scan import Scan, scan, split
from geotrain.training.fit import OneCycleTask, freeze_except
from geotrain.training.job import Job, class_colors
from geotrain.training.models.registry import with_weights

FRAME_RANGE = 20  # how many frames apart an exemplar and its search window may be (SiamMask's on YouTube-VOS)
POSITIVE, NEGATIVE = 0.6, 0.3  # anchor IoU with the object's box
NEGATIVES = 48  # background anchors scored per sample (SiamRPN's 64 anchors less its 16 positives)
WEIGHTS = {"score": 1.0, "box": 1.2, "mask": 36.0}
# jitter, as shares of the window's side: SiamMask shifts the search window by up to 64 of 255 pixels and
# scales it by up to 18 %, the exemplar by 4 of 127 pixels and 5 %
SEARCH_SHIFT, SEARCH_SCALE = 64 / 255, 0.18
EXEMPLAR_SHIFT, EXEMPLAR_SCALE = 4 / 127, 0.05

Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Sighting:
    chip: int  # index in the scan
    frame: int  # position in frame order
    instance: int  # index of the object in the chip's target


def tracks_of(scanned: Scan[Any], indices: Sequence[int]) -> dict[tuple[str, int, int], list[Sighting]]:
    """(export folder, class index, instance id) -> the object's sightings in the chips ``indices``, in frame order
    (the order of the chips' names in their folder: each folder of a several-folder job is a video of its own)."""
    order = sorted(indices, key=lambda i: (str(_video(scanned.items[i].image)), _frame_key(scanned.items[i].image)))
    found: dict[tuple[str, int, int], list[Sighting]] = defaultdict(list)
    for frame, chip in enumerate(order):
        target = scanned.sample(chip)[1]
        video = str(_video(scanned.items[chip].image))
        for n, (label, instance, box) in enumerate(
            zip(target["labels"], target["instances"], target["boxes"], strict=True)
        ):
            if min(box[2] - box[0], box[3] - box[1]) >= SIAM_SMALLEST:
                found[(video, int(label), int(instance))].append(Sighting(chip, frame, n))
    return dict(found)


def _video(image: Path) -> Path:
    return image.parent.parent  # the export folder holding images/


def _frame_key(path: Path) -> tuple[int, str]:
    # frames named 000000000012.tif come in numeric order; other names in text order after them
    return (int(path.stem), "") if path.stem.isdigit() else (1 << 62, path.stem)


class TrackPairs(Dataset[Sample]):
    """An exemplar and a search window per sighting: normalized exemplar (bands x E x E), search window (bands x S
    x S), the object's box in the window (x0, y0, x1, y1) and its mask there (S x S, 0..1). Training draws the
    second frame and the jitter at random, validation the same ones every epoch."""

    def __init__(
        self, scanned: Scan[Any], tracks: list[list[Sighting]], exemplar: int, instance: int, frame_range: int,
        train: bool, augment: bool,
    ) -> None:  # fmt: skip
        self.scanned, self.exemplar, self.instance = scanned, exemplar, instance
        self.frame_range, self.train, self.augment = frame_range, train, augment
        self.pairs = [(track, i) for track in tracks for i in range(len(track))]

    def __len__(self) -> int:
        return len(self.pairs)

    def _frame(self, sighting: Sighting) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        image, target = self.scanned.sample(sighting.chip)
        pixels = torch.from_numpy(self.scanned.normalization.apply(image))
        mask = torch.from_numpy(target["masks"][sighting.instance].astype(np.float32))[None]
        return pixels, mask, target["boxes"][sighting.instance]

    def __getitem__(self, i: int) -> Sample:
        track, at = self.pairs[i]
        rng = np.random.default_rng() if self.train else np.random.default_rng(i)
        near = [s for s in track if abs(s.frame - track[at].frame) <= self.frame_range]
        first, second = track[at], near[int(rng.integers(len(near)))]
        pixels, _, box = self._frame(first)
        side = context_side(float(box[2] - box[0]), float(box[3] - box[1]))
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        z = self._cut(pixels, centre, side, self.exemplar, EXEMPLAR_SHIFT, EXEMPLAR_SCALE, rng, self.train)[0]
        pixels, mask, box = self._frame(second)
        # the search window at the exemplar's scale, around the object in its own frame, moved and scaled
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        window = side * self.instance / self.exemplar
        x, (left, top, cut) = self._cut(pixels, centre, window, self.instance, SEARCH_SHIFT, SEARCH_SCALE, rng, True)
        scale = self.instance / cut
        found = torch.tensor(
            [(box[0] - left) * scale, (box[1] - top) * scale, (box[2] - left) * scale, (box[3] - top) * scale],
            dtype=torch.float32,
        )
        m = window_crop(mask, (left + cut / 2, top + cut / 2), cut, self.instance)[0]
        if self.augment and self.train:
            z, x, m, found = _flipped(z, x, m, found, rng, self.instance)
        return z, x, found, m

    @staticmethod
    def _cut(
        pixels: torch.Tensor, centre: tuple[float, float], side: float, out: int, shift: float, scale: float,
        rng: np.random.Generator, jitter: bool,
    ) -> tuple[torch.Tensor, tuple[float, float, float]]:  # fmt: skip
        """The window (moved by up to ``shift`` of its side and scaled by up to ``scale`` when ``jitter``) and
        its top left corner and side in the frame."""
        if jitter:
            side *= float(1 + rng.uniform(-scale, scale))
            dx, dy = (float(v) * shift * side for v in rng.uniform(-1, 1, 2))
            centre = (centre[0] + dx, centre[1] + dy)
        cut = window_crop(pixels, (float(centre[0]), float(centre[1])), side, out)
        return cut, (float(centre[0]) - side / 2, float(centre[1]) - side / 2, side)


def _flipped(
    z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, box: torch.Tensor, rng: np.random.Generator, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exemplar and search window flipped and transposed alike (the eight ways a square can lie), the box and
    mask with them."""
    flip_x, flip_y, transpose = (bool(v) for v in rng.integers(0, 2, 3))
    if transpose:
        z, x, mask = z.transpose(-1, -2), x.transpose(-1, -2), mask.transpose(-1, -2)
        box = box[[1, 0, 3, 2]]
    if flip_x:
        z, x, mask = z.flip(-1), x.flip(-1), mask.flip(-1)
        box = torch.stack([size - box[2], box[1], size - box[0], box[3]])
    if flip_y:
        z, x, mask = z.flip(-2), x.flip(-2), mask.flip(-2)
        box = torch.stack([box[0], size - box[3], box[2], size - box[1]])
    return z.contiguous(), x.contiguous(), mask.contiguous(), box


@dataclass
class TrackingMetrics:
    miou: float  # mean IoU of the found masks with the objects' masks, in the search windows
    box_iou: float  # mean IoU of the found boxes with the objects' boxes


class TrackingTask(OneCycleTask):
    network: SiamMaskNet

    def __init__(self, network: SiamMaskNet, lr: float, freeze: bool) -> None:
        super().__init__()
        self.network, self.lr = network, lr
        self.gradient_clip = 10.0
        if freeze:
            freeze_except(network.encoder)
        self.miou, self.box_iou = MeanMetric(), MeanMetric()
        self.last_metrics: TrackingMetrics | None = None

    def _loss(self, outputs: SiamOutputs, boxes: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        score, offsets = outputs[0].float(), outputs[1].float()
        net, batch, size = self.network, len(boxes), score.shape[-1]
        anchors = net.anchors(size, score.device)  # k x R x R x 4
        flat = box_convert(anchors.reshape(-1, 4), "cxcywh", "xyxy")
        iou = torch.stack([box_iou(b[None], flat)[0] for b in boxes]).view(batch, *anchors.shape[:3])
        positive = iou > POSITIVE
        # a small or long thin object may meet no anchor that well: its best anchor counts (a 100 x 5 px object
        # overlaps its best anchor by IoU 0.18)
        best = iou.flatten(1).argmax(1)
        fallback = torch.zeros_like(positive).flatten(1)
        fallback[torch.arange(batch), best] = iou.flatten(1)[torch.arange(batch), best] > 0
        positive = positive | fallback.view_as(positive)
        negative = (iou < NEGATIVE) & ~positive
        # a random NEGATIVES of each sample's background anchors
        draw = torch.rand_like(iou).masked_fill(~negative, -1).flatten(1)
        chosen = torch.zeros_like(negative).flatten(1)
        top = draw.topk(min(NEGATIVES, draw.shape[1]), 1)
        chosen.scatter_(1, top.indices, top.values >= 0)
        negative = chosen.view_as(negative)
        pos_loss = F.binary_cross_entropy_with_logits(score[positive], torch.ones_like(score[positive]))
        neg_loss = F.binary_cross_entropy_with_logits(score[negative], torch.zeros_like(score[negative]))
        score_loss = 0.5 * (pos_loss if positive.any() else score.sum() * 0) + 0.5 * neg_loss
        # box offsets of the positive anchors: centre moves in anchor sizes, log size ratios
        wanted = box_convert(boxes, "xyxy", "cxcywh")
        d = offsets.reshape(batch, len(net.ratios), 4, size, size).permute(0, 1, 3, 4, 2)
        target = torch.cat(
            [
                (wanted[:, None, None, None, :2] - anchors[..., :2]) / anchors[..., 2:],
                torch.log(wanted[:, None, None, None, 2:].clamp(min=1) / anchors[..., 2:]),
            ],
            -1,
        )
        box_loss = F.smooth_l1_loss(d[positive], target[positive]) if positive.any() else d.sum() * 0
        # masks at the locations with a positive anchor: the exemplar-sized window there, at the mask's size
        where = positive.any(1).nonzero()  # (sample, row, column)
        if len(where):
            windows = net.windows(where, size)
            truth = roi_align(masks[:, None].float(), windows, net.mask_size, 1.0, 2, aligned=True)[:, 0]
            found = net.masks(outputs, where)
            mask_loss = F.binary_cross_entropy_with_logits(found, (truth > 0.5).float())
        else:
            # the refinement module stays in the graph (DDP expects a gradient for every weight on every rank)
            mask_loss = net.masks(outputs, torch.zeros(1, 3, dtype=torch.long, device=score.device)).sum() * 0
        return WEIGHTS["score"] * score_loss + WEIGHTS["box"] * box_loss + WEIGHTS["mask"] * mask_loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        z, x, boxes, masks = batch
        loss = self._loss(self.network(z, x), boxes, masks)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(z), sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.miou.reset()
        self.box_iou.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        z, x, boxes, masks = batch
        outputs = self.network(z, x)
        self.log("valid_loss", self._loss(outputs, boxes, masks), on_step=False, on_epoch=True, batch_size=len(z),
                 sync_dist=True)  # fmt: skip
        found_boxes, found_masks = self.found(outputs)
        for box, truth, mask, wanted in zip(found_boxes, masks, found_masks, boxes, strict=True):
            self.miou.update(_iou(mask > 0.5, truth > 0.5))
            self.box_iou.update(box_iou(box[None], wanted[None])[0, 0])

    def found(self, outputs: SiamOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample the best-scored anchor's box (x0, y0, x1, y1) and its location's mask (search window
        probabilities)."""
        score, offsets = outputs[0], outputs[1]
        net, size = self.network, score.shape[-1]
        boxes = net.decode(offsets, net.anchors(size, score.device)).flatten(1, 3)
        best = score.float().flatten(1).argmax(1)
        rows, cols = (best % (size * size)) // size, best % size
        logits = net.masks(outputs, torch.stack([torch.arange(len(best), device=best.device), rows, cols], 1))
        centres = net.centres(size, score.device)
        pixels = torch.arange(net.instance, device=score.device, dtype=torch.float32)
        found_masks = [
            net.mask_in(m, (float(centres[c]), float(centres[r])), pixels, pixels)
            for m, r, c in zip(logits, rows.tolist(), cols.tolist(), strict=True)
        ]
        return box_convert(boxes[torch.arange(len(best)), best], "cxcywh", "xyxy"), torch.stack(found_masks)

    def on_validation_epoch_end(self) -> None:
        self.last_metrics = TrackingMetrics(float(self.miou.compute()), float(self.box_iou.compute()))
        self.log("miou", self.last_metrics.miou)
        self.log("box_iou", self.last_metrics.box_iou)


def _iou(found: torch.Tensor, truth: torch.Tensor) -> float:
    union = float((found | truth).sum())
    return float((found & truth).sum()) / union if union else 1.0


def collate(batch: list[Sample]) -> Sample:
    z, x, boxes, masks = (torch.stack(parts) for parts in zip(*batch, strict=True))
    return z, x, boxes, masks


def train(job: Job) -> None:
    params, export, progress = job.params, job.export, job.progress
    scanned = job.checked(scan(export, reader_for(export).load, job.reading))
    foreground = [c for c in export.classes if c.value != 0]
    every = tracks_of(scanned, range(len(scanned.items)))
    if not every:
        raise TrainingError(
            "The export has no object of at least 2 x 2 pixels in labels/<class>/: SIAMMASK learns to track the "
            "objects its masks outline."
        )
    keys = sorted(every)
    if len(keys) >= 2:
        # whole tracks validate (arcgis.learn holds out whole sequences)
        train_idx, valid_idx = split(len(keys), params.validation_percent)
        train_tracks, valid_tracks = [every[keys[i]] for i in train_idx], [every[keys[i]] for i in valid_idx]
        unit = "tracks"
    else:
        chips_train, chips_valid = job.split(scanned)
        train_tracks, valid_tracks = (
            list(tracks_of(scanned, chips_train).values()),
            list(tracks_of(scanned, chips_valid).values()),
        )
        unit = "tracks (one object, its frames split)"
    if not valid_tracks or not train_tracks:
        raise TrainingError(
            "SIAMMASK needs objects in both the training and the validation frames; export more frames."
        )
    seen = sum(len(t) for t in train_tracks), sum(len(t) for t in valid_tracks)
    progress.info(
        f"Tracking: {len(train_tracks)} {unit} with {seen[0]} sightings for training, {len(valid_tracks)} with "
        f"{seen[1]} for validation; an object is one instance id of one class folder, through the frames of its export "
        "folder in name order."
    )
    exemplar, instance = params.windows()
    given = {"exemplar_size", "instance_size", "chip_size"} & set(params.arguments) or params.chip_size
    if job.pretrained is not None and not given:
        # fine-tuning: the package's windows, which its mask head was built for
        tuned = job.pretrained.emd.get("ModelParameters") or {}
        exemplar = int(tuned.get("exemplar_size", exemplar))
        instance = int(tuned.get("instance_size", instance))
    frame_range = int(params.argument("frame_range", FRAME_RANGE))
    augment = job.flips_and_turns("exemplars and search windows")
    train_set = TrackPairs(scanned, train_tracks, exemplar, instance, frame_range, True, augment)
    valid_set = TrackPairs(scanned, valid_tracks, exemplar, instance, frame_range, False, False)

    arch = params.backbone.lower()
    network = SiamMaskNet(arch, scanned.num_bands, exemplar, instance)
    built = with_weights(network, network.encoder, arch, scanned.num_bands, params.weight_init_scheme, ("layer4",))
    freeze = job.announce_model(network, built.notes, built.pretrained_from is not None)
    task = TrackingTask(network, params.learning_rate or 1e-3, freeze)
    result = job.fit(task, train_set, valid_set, scanned, collate)
    if not job.leader:
        return  # the package is rank 0's to write

    m: TrackingMetrics = result.metrics
    emd = job.model_emd("ObjectTracking", "SiamMask", scanned, exemplar, result)
    emd["ModelParameters"].update(
        {
            "exemplar_size": exemplar, "instance_size": instance, "mask_size": network.mask_size,
            "anchors": {"stride": SIAM_STRIDE, "ratios": list(SIAM_RATIOS), "scales": [exemplar / 2 / SIAM_STRIDE]},
            "hp": {**SIAM_TRACKING, "instance_size": instance, "out_size": exemplar},
            "frame_range": frame_range,
        }
    )  # fmt: skip
    emd.update({"mean_IOU": emd_writer.metric_text(m.miou), "box_IOU": emd_writer.metric_text(m.box_iou)})
    task.eval()
    device = next(task.parameters()).device
    images, truths, found = [], [], []
    color = class_colors(foreground)[0] if foreground else (255, 0, 0)
    with torch.no_grad():
        for i in range(min(4, len(valid_set))):
            z, x, _, mask = valid_set[i]
            _, masks = task.found(task.network(z[None].to(device), x[None].to(device)))
            images.append(scanned.normalization.revert(x.numpy()))
            truths.append((mask > 0.5).numpy().astype(np.uint8))
            found.append((masks[0] > 0.5).cpu().numpy().astype(np.uint8))
    job.write_package(
        emd,
        network.state_dict(),
        result,
        pictures.show_results(images, truths, found, np.array([(0, 0, 0), color], dtype=np.float64)),
        [
            ("Model", "SiamMask"),
            ("Backbone", arch),
            ("Exemplar / search window", f"{exemplar} / {instance} px"),
            ("Learning rate", f"{result.lr:.4e}"),
            ("Mean mask IoU", f"{m.miou:.4f}"),
            ("Mean box IoU", f"{m.box_iou:.4f}"),
            ("Epochs", str(len(result.history))),
        ],
        {},
        f"mean mask IoU {m.miou:.4f}",
    )
    track = valid_tracks[0]
    first, later = track[0], track[min(1, len(track) - 1)]
    frames = [scanned.sample(first.chip)[0], scanned.sample(later.chip)[0]]
    box = scanned.sample(first.chip)[1]["boxes"][first.instance]
    start = (float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1]))
    tracker = SiamTracker(network, torch.from_numpy(scanned.normalization.apply(frames[0])).to(device), start)
    expected = tracker.update(torch.from_numpy(scanned.normalization.apply(frames[1])).to(device))
    job.check_tracker(frames, start, (expected[0], expected[1], expected[2].cpu().numpy()))
