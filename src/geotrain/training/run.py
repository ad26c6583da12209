"""A whole training job inside the training process: data -> model -> fit -> package -> publish."""

from __future__ import annotations

import colorsys
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geotrain.config import Settings
from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk import package, pictures
from geotrain.errors import TrainingError
from geotrain.publish.location import package_location
from geotrain.stores import StorePathError
from geotrain.task.params import TrainParams
from geotrain.task.submission import load_export
from geotrain.training.data.augment import SegmentationAugmenter
from geotrain.training.data.classified_tiles import ClassMap, SegmentationChips, scan_segmentation
from geotrain.training.data.export import ClassInfo
from geotrain.training.data.scan import Scan, bad_chip_verdict, split
from geotrain.training.fit import EpochRecord, FitOptions, LossOptions, SegmentationTask, fit
from geotrain.training.models.registry import build

log = logging.getLogger(__name__)

MODEL_NAMES = {"UNET": "UnetClassifier"}
# share of the progress bar spent before and after the epochs
_PREPARE, _PACKAGE = 5.0, 95.0


@dataclass
class Progress:
    """How the training process talks to the job: messages, warnings and a percentage."""

    info: Callable[[str], None]
    warn: Callable[[str], None]
    percent: Callable[[float, str], None]


def _colors(classes: list[ClassInfo]) -> list[tuple[int, int, int]]:
    out = []
    for i, c in enumerate(classes):
        if c.color is not None:
            out.append(c.color)
        else:  # [-1,-1,-1] in the export: no symbology, so spread hues evenly
            r, g, b = colorsys.hsv_to_rgb((i * 0.618) % 1.0, 0.75, 0.95)
            out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def train(params: TrainParams, settings: Settings, workdir: Path, progress: Progress) -> dict[str, Any]:
    """Train, write the .dlpk into its file share, and return the out_item value."""
    export = load_export(params, settings)
    try:
        target = package_location(params.output_name, settings)
    except StorePathError as exc:
        raise TrainingError(f"output_name: {exc}") from None
    if export.missing:
        progress.warn(
            f"{len(export.missing)} of {len(export.missing) + len(export.items)} chips listed in map.txt are missing "
            f"on disk and were skipped (first: {export.missing[0]})."
        )
    # value 0 is background (NoData): a class the export declares with value 0 names it
    foreground = [c for c in export.classes if c.value != 0]
    background = next((c.name for c in export.classes if c.value == 0), "NoData")
    class_map = ClassMap([c.value for c in foreground])
    progress.info(f"Reading {len(export.items)} chips of {export.metadata_format} from {', '.join(params.in_folder)}.")
    scanned, counts = scan_segmentation(
        export, class_map, lambda n, total: progress.percent(_PREPARE * n / max(total, 1), "Reading chips")
    )
    verdict = bad_chip_verdict(scanned)
    if verdict is not None:
        fatal, text = verdict
        if fatal:
            raise TrainingError(text)
        progress.warn(text)
    if counts.undeclared:
        values = ", ".join(str(v) for v in sorted(counts.undeclared)[:10])
        progress.warn(f"Label values that are not classes of the export were treated as NoData: {values}.")
    absent = [c.name for c, n in zip(foreground, counts.per_class[1:], strict=True) if n == 0]
    if absent:
        progress.warn(f"Classes declared in the export but absent from every label: {', '.join(absent)}.")
    train_idx, valid_idx = split(len(scanned.items), params.validation_percent)
    progress.info(
        f"Training on {len(train_idx)} chips, validating on {len(valid_idx)} ({params.validation_percent:g}%)."
    )

    tile = export.tile_size or scanned_size(scanned)
    chip_size = params.crop_size or min(tile)
    augment = params.data_augmentation != "NONE"
    norm = scanned.normalization
    augmenter = (
        SegmentationAugmenter(params.augmentations, norm.band_min, norm.band_max) if params.augmentations else None
    )
    if augmenter is not None:
        progress.info(f"Custom augmentation: {', '.join(a.name for a in params.augmentations)}.")
    train_set = SegmentationChips(
        scanned, train_idx, chip_size, train=True, augment=augment, class_map=class_map, augmenter=augmenter
    )
    valid_set = SegmentationChips(scanned, valid_idx, chip_size, train=False, augment=False, class_map=class_map)

    use_gpu = torch.cuda.is_available() and str(params.context.get("processorType", "")).upper() != "CPU"
    if str(params.context.get("processorType", "")).upper() == "GPU" and not torch.cuda.is_available():
        progress.warn("processorType GPU was requested but this worker has no CUDA device; training on the CPU.")
    progress.info(f"Training {params.model_type} ({params.backbone.lower()}) on {'GPU' if use_gpu else 'CPU'}.")

    built = build(
        params.model_type, params.backbone, scanned.num_bands, class_map.num_classes, params.weight_init_scheme
    )
    for note in built.notes:
        (progress.info if built.pretrained_from else progress.warn)(note)
    freeze = params.freeze_model and built.pretrained_from is not None
    if params.freeze_model and not freeze:
        progress.warn("freeze_model: the backbone has no pretrained weights to keep, so it is trained too.")

    loss = _loss_options(params, class_map, counts.per_class)
    task = SegmentationTask(
        built.network, built.encoder, class_map.num_classes, params.learning_rate or 1e-3, loss, freeze
    )

    def on_epoch(record: EpochRecord, max_epochs: int) -> None:
        text = (
            f"Epoch {record.epoch}/{max_epochs}: train_loss {record.train_loss:.4f}, "
            f"valid_loss {record.valid_loss:.4f}, "
            f"accuracy {record.metrics['accuracy']:.4f}, mIoU {record.metrics['miou']:.4f}"
        )
        # the percentage first: a client that sees the epoch's message also sees its progress
        progress.percent(
            _PREPARE + (_PACKAGE - _PREPARE) * record.epoch / max_epochs, f"Epoch {record.epoch}/{max_epochs}"
        )
        progress.info(text)

    options = FitOptions(
        max_epochs=params.max_epochs, batch_size=params.batch_size, lr=params.learning_rate, monitor=params.monitor,
        stop_training=params.stop_training, use_gpu=use_gpu, workdir=workdir,
        # chips held in memory are cropped faster than worker processes start; from disk, read in parallel
        num_workers=0 if scanned.samples is not None else min(4, os.cpu_count() or 1),
    )  # fmt: skip
    result = fit(task, train_set, valid_set, options, on_epoch, progress.info, progress.warn)
    if result.stopped_early:
        progress.info(f"Early stopping: no improvement in {params.monitor.lower()} for 5 epochs.")
    if result.best_epoch is not None:
        progress.info(f"Keeping the weights of epoch {result.best_epoch} (best {params.monitor.lower()}).")
    progress.percent(_PACKAGE, "Writing the deep learning package")

    names = [background, *[c.name for c in foreground]]
    per_class = {
        name: {"precision": p, "recall": r, "f1": f}
        for name, p, r, f in zip(names, result.metrics.precision, result.metrics.recall, result.metrics.f1, strict=True)
    }
    colors = _colors(export.classes)
    name = target.local.stem
    emd = emd_writer.pixel_classification_emd(
        name=name,
        model_type=params.model_type,
        model_name=MODEL_NAMES[params.model_type],
        backbone=params.backbone,
        classes=[emd_writer.ClassEntry(c.value, c.name, col) for c, col in zip(export.classes, colors, strict=True)],
        bands=scanned.num_bands,
        extract_bands=export.extract_bands,
        tile_size=(chip_size, chip_size),
        learning_rate=result.lr,
        accuracy=result.metrics.accuracy,
        miou=result.metrics.miou,
        per_class=per_class,
        monitored=(MONITOR_NAMES[params.monitor], result.best_score) if result.best_score is not None else None,
        normalization={
            "band_min_values": norm.band_min,
            "band_max_values": norm.band_max,
            "band_mean_values": (norm.mean / norm.scale).tolist(),
            "band_std_values": (norm.std / norm.scale).tolist(),
            "scale": norm.scale,
        },
        is_imagenet=norm.imagenet,
        image_space=export.image_space,
        min_cell_size=export.min_cell_size,
        max_cell_size=export.max_cell_size,
        ignore_classes=list(params.argument("ignore_classes", [])),
        extra={"ExportChipSize": [tile[0], tile[1]], "BestEpoch": result.best_epoch, "EpochsRun": len(result.history)},
    )
    history = result.history
    contents = package.PackageContents(
        name=name,
        emd=emd,
        state_dict=built.network.state_dict(),
        loss_graph=pictures.loss_graph(
            [h.epoch for h in history], [h.train_loss for h in history], [h.valid_loss for h in history]
        ),
        show_results=_show_results(task, valid_set, np.array([(0, 0, 0), *colors], dtype=np.float64)),
        report_rows=[
            ("Model", MODEL_NAMES[params.model_type]),
            ("Backbone", params.backbone.lower()),
            ("Learning rate", f"{result.lr:.4e}"),
            ("Accuracy", f"{result.metrics.accuracy:.4f}"),
            ("mIoU", f"{result.metrics.miou:.4f}"),
            ("Epochs", str(len(history))),
        ],
        per_class=per_class,
    )
    package.write(contents, target.local)
    # the package holds what is worth keeping; checkpoints stay only for jobs that did not finish
    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    progress.info(f"Wrote {target.uri} (accuracy {result.metrics.accuracy:.4f}, mIoU {result.metrics.miou:.4f}).")
    return {"uri": target.uri}


MONITOR_NAMES = {"VALID_LOSS": "valid_loss", "ACCURACY": "accuracy", "MIOU": "miou"}


def scanned_size(scanned: Scan[np.ndarray]) -> tuple[int, int]:
    image, _ = scanned.sample(0)
    return image.shape[1], image.shape[2]


def _loss_options(params: TrainParams, class_map: ClassMap, pixels: np.ndarray) -> LossOptions:
    weights = None
    if params.argument("class_balancing", False):
        # inverse frequency, normalised to mean 1; classes without pixels keep weight 1
        freq = pixels.astype(np.float64) / max(pixels.sum(), 1)
        inv = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 0.0)
        inv = inv / inv[inv > 0].mean() if (inv > 0).any() else np.ones_like(inv)
        weights = torch.tensor(np.where(inv > 0, inv, 1.0), dtype=torch.float32)
    ignore = [class_map.values.index(v) + 1 for v in params.argument("ignore_classes", []) if v in class_map.values]
    return LossOptions(
        class_weights=weights,
        focal=bool(params.argument("focal_loss", False)),
        dice_fraction=float(params.argument("dice_loss_fraction", 0.0)),
        dice_average=str(params.argument("dice_loss_average", "micro")),
        ignore_index=ignore,
    )


def _show_results(task: SegmentationTask, valid_set: SegmentationChips, colors: np.ndarray) -> bytes:
    task.eval()
    images, truths, preds = [], [], []
    device = next(task.parameters()).device
    with torch.no_grad():
        for i in range(min(4, len(valid_set))):
            x, y = valid_set[i]
            raw, _ = valid_set.crop(*valid_set.raw(i))
            pred = task(x.unsqueeze(0).to(device)).argmax(dim=1)[0].cpu().numpy()
            images.append(raw)
            truths.append(y.numpy())
            preds.append(pred)
    return pictures.show_results(images, truths, preds, colors)
