"""Pixel classification (UNET, PSPNET, DEEPLAB) on Classified_Tiles, and change detection (CHANGEDETECTOR)
on Classified_Tiles with images2/: the two dates' bands stacked, one pixel classifier over both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk import pictures
from geotrain.dlpk.prf.geotrain_networks import HourglassRoadNet, MMSegNet, RoadNet
from geotrain.task import catalog
from geotrain.task.params import TrainParams
from geotrain.training.data.classified_tiles import ClassMap, SegmentationChips, scan_segmentation
from geotrain.training.data.scan import Scan
from geotrain.training.fit import LossOptions, OneCycleTask, SegmentationTask, fit
from geotrain.training.job import Job, class_colors
from geotrain.training.models.pointrend import PointRend
from geotrain.training.models.registry import PYRAMID_SIZES, build, deeplab_output_stride
from geotrain.training.roads import MODEL_NAMES as ROAD_NAMES
from geotrain.training.roads import ORIENT_BIN_SIZE, REACH, ROADS, RoadTask, aux_channels, orientation_bins

MODEL_NAMES = {
    **ROAD_NAMES,
    "UNET": "UnetClassifier", "PSPNET": "PSPNetClassifier", "DEEPLAB": "DeepLab", "CHANGEDETECTOR": "ChangeDetector",
    "MMSEGMENTATION": "MMSegmentation",
}  # fmt: skip


def train(job: Job) -> None:
    params, export, progress = job.params, job.export, job.progress
    # value 0 is background (NoData): a class the export declares with value 0 names it
    foreground = [c for c in export.classes if c.value != 0]
    background = next((c.name for c in export.classes if c.value == 0), "NoData")
    class_map = ClassMap([c.value for c in foreground])
    paired = params.model_type == "CHANGEDETECTOR"
    scanned, counts = scan_segmentation(export, class_map, job.reading, paired)
    job.checked(scanned)
    if counts.undeclared:
        values = ", ".join(str(v) for v in sorted(counts.undeclared)[:10])
        progress.warn(f"Label values that are not classes of the export were treated as NoData: {values}.")
    absent = [c.name for c, n in zip(foreground, counts.per_class[1:], strict=True) if n == 0]
    if absent:
        progress.warn(f"Classes declared in the export but absent from every label: {', '.join(absent)}.")
    train_idx, valid_idx = job.split(scanned)

    tile = export.tile_size or first_size(scanned)
    chip_size = job.crop_size() or min(tile)
    train_augmenter, valid_augmenter = job.augmenters(scanned.normalization)
    augment = params.data_augmentation != "NONE"
    # the class map lets chips not held in memory be read as just their window (one file: not for pairs)
    windows = None if paired else class_map
    train_set = SegmentationChips(scanned, train_idx, chip_size, True, augment, windows, train_augmenter)
    valid_set = SegmentationChips(scanned, valid_idx, chip_size, False, False, windows, valid_augmenter)

    use_gpu = job.use_gpu()
    built = build(
        params.model_type,
        params.backbone,
        scanned.num_bands,
        class_map.num_classes,
        params.weight_init_scheme,
        params.arguments,
    )
    freeze = job.announce_model(built.network, built.notes, built.pretrained_from is not None)
    loss = _loss_options(params, class_map, counts.per_class)
    lr = params.learning_rate or 1e-3
    task: SegmentationTask
    if params.model_type in ROADS:
        assert isinstance(built.network, RoadNet | HourglassRoadNet)
        bin_size = int(params.argument("orient_bin_size", ORIENT_BIN_SIZE))
        task = RoadTask(built.network, class_map.num_classes, lr, loss, freeze, params.model_type, bin_size)
        second = (
            f"each road pixel's direction in {orientation_bins(bin_size)} bins of {bin_size} degrees"
            if params.model_type == "MULTITASK_ROADEXTRACTOR"
            else f"whether the pixels {REACH} px away in 8 directions are road too"
        )
        hourglass = isinstance(built.network, HourglassRoadNet)
        network = (
            "two stacked hourglasses (mtl_model hourglass, the default; backbone_model does not apply to it)"
            if hourglass
            else f"a LinkNet-style U-Net on {params.backbone} (mtl_model linknet)"
        )
        progress.info(f"Road extraction: {network} learning the road classes and, beside them, {second}.")
    else:
        task = SegmentationTask(built.network, built.encoder, class_map.num_classes, lr, loss, freeze, paired)
    result = fit(
        task, train_set, valid_set, job.fit_options(use_gpu, scanned), job.on_epoch, progress.info, progress.warn
    )
    job.report_fit(result)
    if not job.leader:
        return  # the package is rank 0's to write

    names = [background, *[c.name for c in foreground]]
    m = result.metrics
    per_class = {
        name: {"precision": p, "recall": r, "f1": f}
        for name, p, r, f in zip(names, m.precision, m.recall, m.f1, strict=True)
    }
    colors = class_colors(export.classes)
    emd = job.model_emd("ImageClassification", MODEL_NAMES[params.model_type], scanned, chip_size, result)
    emd["ModelParameters"].update(network_parameters(params.model_type, params.arguments, built.network))
    emd.update(
        {
            "accuracy": emd_writer.metric_text(m.accuracy),
            "miou": emd_writer.metric_text(m.miou),
            # arcgis.learn stores this as JSON text, NoData included
            "per_class_metrics": emd_writer.json_text(per_class),
            "ignore_mapped_class": list(params.argument("ignore_classes", [])),
            "SupportsVariableTileSize": True,
            "ExportChipSize": [tile[0], tile[1]],
        }
    )
    rows = [("Accuracy", f"{m.accuracy:.4f}"), ("mIoU", f"{m.miou:.4f}")]
    summary = f"accuracy {m.accuracy:.4f}, mIoU {m.miou:.4f}"
    if paired:
        # Detect Change Using Deep Learning hands over the two rasters as one, the first's bands then the second's
        emd["ExtractBands"] = list(range(scanned.num_bands))
        precision, recall, f1 = task.last_change  # of the kept weights
        emd.update({"precision": precision, "recall": recall, "f1": f1})
        rows += [("Precision (change)", f"{precision:.4f}"), ("Recall (change)", f"{recall:.4f}"), ("F1", f"{f1:.4f}")]
        summary = f"change precision {precision:.4f}, recall {recall:.4f}, F1 {f1:.4f}"
    job.write_package(
        emd,
        built.network.state_dict(),
        result,
        show_results(task, valid_set, np.array([(0, 0, 0), *colors], dtype=np.float64), paired),
        [
            ("Model", MODEL_NAMES[params.model_type]),
            ("Backbone", params.backbone.lower()),
            ("Learning rate", f"{result.lr:.4e}"),
            *rows,
            ("Epochs", str(len(result.history))),
        ],
        per_class,
        summary,
    )
    job.check_package(*package_check(task, valid_set, class_map))


def package_check(
    task: torch.nn.Module, valid_set: SegmentationChips, class_map: ClassMap
) -> tuple[np.ndarray, np.ndarray]:
    """A validation chip's raw pixels and the class values the trained model (``task``: chips to class
    scores) gives them."""
    raw, _ = valid_set.crop(*valid_set.raw(0))
    x, _ = valid_set[0]
    task.eval()
    with torch.no_grad():
        indices = task(x.unsqueeze(0).to(next(task.parameters()).device)).argmax(dim=1)[0].cpu().numpy()
    values = np.asarray([0, *class_map.values], dtype=np.int64)
    return np.ascontiguousarray(raw), values[indices]


def network_parameters(model_type: str, arguments: dict[str, Any], network: torch.nn.Module) -> dict[str, Any]:
    """What the package's inference function needs, beyond the backbone and band count, to rebuild
    ``network`` (geotrain_networks.pixel_classifier)."""
    out: dict[str, Any] = {}
    if model_type == "PSPNET":
        out["use_unet"] = bool(arguments.get("use_unet", arguments.get("use_net", True)))
        out["pyramid_sizes"] = [int(s) for s in arguments.get("pyramid_sizes", PYRAMID_SIZES)]
        out["unet_aux_loss"] = bool(arguments.get("unet_aux_loss", False))
    if model_type == "CHANGEDETECTOR":
        out["attention_type"] = str(arguments.get("attention_type", "PAM"))
    if model_type in ROADS:
        bin_size = int(arguments.get("orient_bin_size", ORIENT_BIN_SIZE))
        out.update(
            mtl_model="hourglass" if isinstance(network, HourglassRoadNet) else "linknet",
            orient_bin_size=bin_size,
            aux_channels=aux_channels(model_type, bin_size),
        )
    if model_type == "DEEPLAB":
        out["output_stride"] = deeplab_output_stride(arguments)
        out["keep_dilation"] = bool(arguments.get("keep_dilation", False))
    if isinstance(network, MMSegNet):
        out["mmseg_model"] = network.config
        out["model"] = catalog.openmmlab_model(model_type, arguments)
    out["pointrend"] = isinstance(network, PointRend)
    if isinstance(network, PointRend):
        out["pointrend_features"], out["pointrend_channels"] = network.fine_module, network.fine_channels
    return out


def first_size(scanned: Scan[np.ndarray]) -> tuple[int, int]:
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
        mixup=bool(params.argument("mixup", False)),
    )


def show_results(
    task: OneCycleTask,
    valid_set: SegmentationChips,
    colors: np.ndarray,
    paired: bool = False,
    truth: Callable[[np.ndarray], np.ndarray] = lambda y: y,
) -> bytes:
    """The sample-results picture: up to four validation chips, their truth (``truth`` of the labels) and the
    network's argmax. ``paired``: the chips hold two dates; the picture shows the later one."""
    task.eval()
    images, truths, preds = [], [], []
    device = next(task.parameters()).device
    with torch.no_grad():
        for i in range(min(4, len(valid_set))):
            x, y = valid_set[i]
            raw, _ = valid_set.crop(*valid_set.raw(i))
            pred = task(x.unsqueeze(0).to(device)).argmax(dim=1)[0].cpu().numpy()
            images.append(raw[raw.shape[0] // 2 :] if paired else raw)
            truths.append(truth(y.numpy()))
            preds.append(pred)
    return pictures.show_results(images, truths, preds, colors)
