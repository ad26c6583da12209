"""A whole training job inside the training process: export -> the model family's run -> package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geotrain.config import Settings
from geotrain.errors import TrainingError
from geotrain.publish.location import package_location
from geotrain.stores import StorePathError
from geotrain.task import catalog, pretrained
from geotrain.task.params import TrainParams
from geotrain.task.submission import load_export
from geotrain.training.job import Job, Progress

__all__ = ["Progress", "train"]


def train(params: TrainParams, settings: Settings, workdir: Path, progress: Progress) -> dict[str, Any]:
    """Train, write the .dlpk into its file share, and return the out_item value."""
    export = load_export(params, settings)
    # checked at submit; again here, as the package may have changed since
    found = pretrained.check(params, settings, export)
    if found is not None and params.backbone_model is None:
        params = params.model_copy(update={"backbone_model": found.backbone})
    try:
        target = package_location(params.output_name, settings)
    except StorePathError as exc:
        raise TrainingError(f"output_name: {exc}") from None
    if export.missing:
        progress.warn(
            f"{len(export.missing)} of {len(export.missing) + len(export.items)} chips listed in map.txt are missing "
            f"on disk and were skipped (first: {export.missing[0]})."
        )
    progress.info(f"Reading {len(export.items)} chips of {export.metadata_format} from {', '.join(params.in_folder)}.")
    job = Job(params, settings, workdir, progress, export, target, found)
    match catalog.BUILT[params.model_type].family:
        # each family imports only its own stack
        case "pixel_classification":
            from geotrain.training.segmentation import train as train_segmentation

            return train_segmentation(job)
        case "object_classification":
            from geotrain.training.classification import train as train_classification

            return train_classification(job)
        case "object_detection" | "instance_segmentation":
            from geotrain.training.detection import train as train_detection

            return train_detection(job)
    raise TrainingError(f"{params.model_type} has no training run")
