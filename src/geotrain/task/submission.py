"""Submit-time checks that need the data stores: the export exists, suits the model, the output fits."""

from __future__ import annotations

from geotrain.config import Settings
from geotrain.errors import ParameterError
from geotrain.jobs.accounts import ANONYMOUS
from geotrain.publish.location import package_location
from geotrain.publish.portal import Publisher, item_source
from geotrain.stores import StorePathError, resolve
from geotrain.task import catalog, pretrained
from geotrain.task.augmentation import TRANSFORMS_FILE
from geotrain.task.params import TrainParams
from geotrain.training.data.export import KIND_NEEDS, ExportError, ExportInfo, data_kind, merge_exports, read_export


def load_export(params: TrainParams, settings: Settings) -> ExportInfo:
    """Resolve every input folder inside its data store and read it as one export."""
    exports = []
    for folder in params.in_folder:
        try:
            local = resolve(folder, settings.stores).local
        except StorePathError as exc:
            raise ParameterError("in_folder", f"'{folder}' is refused: {exc}.") from None
        try:
            exports.append(read_export(local))
        except ExportError as exc:
            raise ParameterError("in_folder", f"'{folder}': {exc}.") from None
    try:
        return merge_exports(exports)
    except ExportError as exc:
        raise ParameterError("in_folder", f"{exc}.") from None


def check(
    params: TrainParams, settings: Settings, owner: str = ANONYMOUS, portal: Publisher | None = None
) -> ExportInfo:
    """Everything about a request that can be known before it is queued. ``portal``: the embedded portal,
    whose items are checked here (an external portal's are checked by the worker)."""
    export = load_export(params, settings)
    info = catalog.BUILT[params.model_type]
    if export.metadata_format not in info.formats:
        raise ParameterError(
            "in_folder",
            f"the export's metadata format is {export.metadata_format}, but {params.model_type} trains on "
            f"{', '.join(info.formats)}. Export the training data again with a matching metadata format.",
        )
    if info.data_kinds and data_kind(export) not in info.data_kinds:
        raise ParameterError(
            "in_folder",
            f"{params.model_type} trains on {' or '.join(KIND_NEEDS[k] for k in info.data_kinds)}; this "
            f"{export.metadata_format} export has none.",
        )
    if len(export.items) < 2:
        raise ParameterError(
            "in_folder",
            f"the export has {len(export.items)} image chip(s) whose files exist; "
            "training and validation need at least 2.",
        )
    try:
        plan = params.augmentation_plan(export.transforms_file)
    except ValueError as exc:
        raise ParameterError("data_augmentation", f"{exc}.") from None
    crop = params.crop_size(plan)
    if crop is not None and export.tile_size is not None and crop > min(export.tile_size):
        if params.chip_size:
            name, what = "chip_size", f"{crop}"
        elif params.data_augmentation == "FILE":
            name, what = "data_augmentation", f"{TRANSFORMS_FILE}: crop {crop}"
        else:
            name, what = "augmentation_parameters", f"crop {crop}"
        tile = export.tile_size
        raise ParameterError(name, f"{what} is larger than the exported chips ({tile[1]}x{tile[0]}).")
    bands = params.argument("n_bands", None)
    if bands is not None and export.num_bands is not None and bands != export.num_bands:
        raise ParameterError("arguments", f"n_bands is {bands}, but the export's chips have {export.num_bands} bands.")
    ignored = params.argument("ignore_classes", [])
    known = {c.value for c in export.classes}
    unknown = [v for v in ignored if v not in known]
    if unknown:
        raise ParameterError("arguments", f"ignore_classes {unknown} are not classes of the export ({sorted(known)}).")
    pretrained.check(params, settings, export, item_source(portal, owner, settings.jobs_dir))
    try:
        package_location(params.output_name, settings)
    except StorePathError as exc:
        raise ParameterError("output_name", f"{exc}.") from None
    item_name = params.output_name.name
    if item_name is not None and portal is not None:
        if portal.existing(owner, item_name) is not None and not params.overwrite_model:
            raise ParameterError(
                "output_name",
                f"you have a Deep Learning Package item named '{item_name}'; set overwrite_model to true to "
                "replace it, or give another name.",
            )
        folder = params.output_name.folder_id
        if folder is not None and portal.folder_missing(owner, folder):
            raise ParameterError("output_name", f"you have no folder '{folder}' in the portal; create it first.")
    return export
