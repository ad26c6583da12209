"""A whole training job inside the training process: export -> the model family's run -> package ->
its file share or its portal item."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytorch_lightning import seed_everything

from geotrain.config import Settings
from geotrain.errors import TrainingError
from geotrain.jobs.accounts import ANONYMOUS
from geotrain.publish.location import package_location
from geotrain.publish.portal import Publisher, item_source, item_spec
from geotrain.stores import StorePathError
from geotrain.task import catalog, pretrained
from geotrain.task.params import TrainParams
from geotrain.task.pretrained import Pretrained
from geotrain.task.submission import load_export
from geotrain.training import distributed
from geotrain.training.fit import SEED
from geotrain.training.job import Job, Progress

__all__ = ["Progress", "train", "train_helper"]

log = logging.getLogger(__name__)

Start = Callable[[distributed.Placement, Pretrained | None], distributed.Group]
"""Rank 0's way to start its job's processes for a plan (the worker's training process starts helpers);
it gives rank 0's group."""


def alone(plan: distributed.Placement, found: Pretrained | None) -> distributed.Group:
    """Train in this process only (no helpers can be started: a run outside a worker)."""
    return distributed.join(plan.alone(), 0)


def train(
    params: TrainParams,
    settings: Settings,
    workdir: Path,
    progress: Progress,
    *,
    owner: str = ANONYMOUS,
    portal: Publisher | None = None,
    start: Start = alone,
) -> dict[str, Any]:
    """Train, write the .dlpk into its file share or add it to ``portal``, and return the out_item value."""
    export = load_export(params, settings)
    # checked at submit; again here, as the package may have changed since
    found = pretrained.check(params, settings, export, item_source(portal, owner, workdir))
    params = pretrained.inherited(params, found)
    try:
        location = package_location(params.output_name, settings)
    except StorePathError as exc:
        raise TrainingError(f"output_name: {exc}") from None
    replace: str | None = None
    if location is not None:
        target, label = location.local, location.uri
    else:
        name = params.output_name.name
        assert name is not None
        if portal is None:
            raise TrainingError(f"output_name: '{name}' names a portal item, and this run has no portal to add it to.")
        # checked at submit for the embedded portal; an external portal is asked here, before hours of training
        replace = portal.existing(owner, name)
        if replace is not None and not params.overwrite_model:
            raise TrainingError(
                f"output_name: the portal has a Deep Learning Package item named '{name}' ({replace}); set "
                "overwrite_model to true to replace it, or give another name."
            )
        target, label = workdir / "package" / f"{name}.dlpk", f"the package for item '{name}'"
    if export.missing:
        progress.warn(
            f"{len(export.missing)} of {len(export.missing) + len(export.items)} chips listed in map.txt are missing "
            f"on disk and were skipped (first: {export.missing[0]})."
        )
    progress.info(f"Reading {len(export.items)} chips of {export.metadata_format} from {', '.join(params.in_folder)}.")
    group = start(distributed.plan(params, progress.warn), found)
    try:
        _train_family(Job(params, settings, workdir, progress, export, target, label, found, group))
    finally:
        distributed.leave(group)
    if location is not None:
        return {"uri": location.uri}
    assert portal is not None
    spec = item_spec(params.output_name, target, params.model_type)
    result = portal.publish(owner, target, spec, replace)
    verb = "Replaced the file of" if replace else "Added the package to the portal as"
    progress.info(f"{verb} item {result['itemId']} ('{spec.title}', {spec.type_keywords[0]} package).")
    return result


def train_helper(params: TrainParams, settings: Settings, workdir: Path, given: distributed.Handover) -> None:
    """A helper rank's part of the job: the same data and model as rank 0, trained beside it; it reports
    nothing (rank 0 does) and writes nothing."""
    export = load_export(params, settings)
    found = pretrained.open_package(*given.pretrained) if given.pretrained is not None else None
    params = pretrained.inherited(params, found)
    # into the rank's own log: the job's messages are rank 0's
    quiet = Progress(info=log.info, warn=log.warning, percent=lambda pct, text: None)
    group = distributed.join(given.plan, given.rank)
    try:
        _train_family(Job(params, settings, workdir, quiet, export, workdir / "unused.dlpk", "", found, group))
    finally:
        distributed.leave(group)


def _train_family(job: Job) -> None:
    # the network starts alike on every rank and in every run of the job
    seed_everything(SEED, workers=True, verbose=False)
    match catalog.BUILT[job.params.model_type].family:
        # each family imports only its own stack
        case "pixel_classification":
            from geotrain.training.segmentation import train as train_segmentation

            train_segmentation(job)
        case "image_translation" if job.params.model_type == "CYCLEGAN":
            from geotrain.training.cyclegan import train as train_cyclegan

            train_cyclegan(job)
        case "image_translation":
            from geotrain.training.translation import train as train_translation

            train_translation(job)
        case "edge_detection":
            from geotrain.training.edges import train as train_edges

            train_edges(job)
        case "panoptic_segmentation":
            from geotrain.training.panoptic import train as train_panoptic

            train_panoptic(job)
        case "image_captioning":
            from geotrain.training.captions import train as train_captions

            train_captions(job)
        case "object_classification":
            from geotrain.training.classification import train as train_classification

            train_classification(job)
        case "object_tracking":
            from geotrain.training.siammask import train as train_tracking

            train_tracking(job)
        case "object_detection" | "instance_segmentation":
            from geotrain.training.detection import train as train_detection

            train_detection(job)
        case _:
            raise TrainingError(f"{job.params.model_type} has no training run")
