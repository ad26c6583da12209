"""The TrainDeepLearningModel parameters as ArcGIS clients send them, parsed and checked.

Every value arrives as a form string: ``""`` means "not given", JSON-valued parameters come as JSON
text, booleans in any case, ``arguments`` also as ``name value;name value``.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator, model_validator

from geotrain.errors import ParameterError
from geotrain.task import augmentation, catalog
from geotrain.task.parallel import Parallelism, parallelism

INPUT_NAMES = (
    "in_folder", "output_name", "model_type", "arguments", "batch_size", "max_epochs", "learning_rate",
    "backbone_model", "validation_percent", "pretrained_model", "stop_training", "freeze_model",
    "overwrite_model", "context", "data_augmentation", "augmentation_parameters", "chip_size", "resize_to",
    "weight_init_scheme", "monitor",
)  # fmt: skip
# model families whose training applies CUSTOM and FILE transforms
AUGMENTED_FAMILIES = ("pixel_classification", "object_classification", "object_detection", "instance_segmentation")
REQUIRED = ("in_folder", "output_name", "model_type")
# families whose batches keep one shape, so that a compiled network is not compiled again batch after batch
COMPILED_FAMILIES = ("pixel_classification", "object_classification")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,127}$")


def _given(value: Any) -> bool:
    return not (value is None or (isinstance(value, str) and value.strip() == ""))


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"it is not valid JSON ({exc.msg} at position {exc.pos})") from None


def _looks_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[")


def _in_folder(value: Any) -> list[str]:
    if isinstance(value, str) and _looks_json(value):
        value = _json(value)
    if isinstance(value, dict):
        value = value.get("uri") or value.get("url") or value.get("path")
        if not isinstance(value, str):
            raise ValueError('a JSON in_folder must be {"uri": "/fileShares/<store>/<folder>"}')
    items: list[Any]
    if isinstance(value, list):
        items = [v.get("uri") if isinstance(v, dict) else v for v in value]
    elif isinstance(value, str):
        items = value.split(",")
    else:
        raise ValueError("expected a data-store path such as /fileShares/<store>/<folder>")
    folders = [str(v).strip() for v in items if _given(v)]
    if not folders:
        raise ValueError("expected a data-store path such as /fileShares/<store>/<folder>")
    return folders


class OutputName(BaseModel):
    """Where the package goes: a portal-style item ``name`` or a file-share folder ``uri``."""

    name: str | None = None
    uri: str | None = None
    folder_id: str | None = None
    item_properties: dict[str, Any] = {}


def _output_name(value: Any) -> OutputName:
    if isinstance(value, OutputName):
        return value
    if isinstance(value, str) and not _looks_json(value):
        text = value.strip()
        if text.startswith(("/", "\\")):
            return OutputName(uri=text)
        value = {"name": text}
    value = _json(value)
    if not isinstance(value, dict):
        raise ValueError('expected {"name": "<model name>"} or {"uri": "/fileShares/<store>/<folder>"}')
    service = value.get("serviceProperties") or {}
    item = value.get("itemProperties") or {}
    if not isinstance(service, dict) or not isinstance(item, dict):
        raise ValueError("serviceProperties and itemProperties must be JSON objects")
    uri = value.get("uri") or value.get("url")
    name = value.get("name") or service.get("name") or item.get("title")
    if uri is not None:
        if not isinstance(uri, str) or not uri.strip().startswith(("/", "\\")):
            raise ValueError("uri must be a data-store path such as /fileShares/<store>/<folder>")
        return OutputName(uri=uri.strip(), item_properties=item)
    if not isinstance(name, str) or not _NAME.match(name.strip()):
        raise ValueError(
            "name must be 1-128 letters, digits, spaces, '_', '-' or '.', starting with a letter, digit or '_'"
        )
    folder = value.get("folderId")
    return OutputName(name=name.strip(), folder_id=str(folder) if folder else None, item_properties=item)


def _literal(text: str) -> Any:
    """arcgis sends every argument value as ``str(python_value)``: read it back as a Python literal."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text.strip()


def _arguments(value: Any) -> dict[str, Any]:
    if not _given(value):
        return {}
    if isinstance(value, str) and not _looks_json(value):
        # ArcGIS Pro's value-table form: name value;name value (values may be quoted)
        parsed: dict[str, Any] = {}
        for pair in value.split(";"):
            if not pair.strip():
                continue
            key, _, raw = pair.strip().partition(" ")
            raw = raw.strip()
            if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
                raw = raw[1:-1]
            parsed[key.strip()] = _literal(raw) if raw else None
        return parsed
    value = _json(value)
    if not isinstance(value, dict):
        raise ValueError('expected a JSON object of name/value pairs, e.g. {"class_balancing": "True"}')
    return {str(k): _literal(v) if isinstance(v, str) else v for k, v in value.items()}


def _bool(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        mapping = {
            "true": True, "false": False, "1": True, "0": False, "yes": True, "no": False,
            "stop_training": True, "continue_training": False, "freeze_model": True, "unfreeze_model": False,
            "overwrite": True, "no_overwrite": False,
        }  # fmt: skip
        if text in mapping:
            return mapping[text]
        raise ValueError("expected true or false")
    return value


def _int(low: int, high: int) -> Any:
    def parse(value: Any) -> int:
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, bool) or not isinstance(number, int | float) or number != int(number):
                raise ValueError
        except (ValueError, TypeError, OverflowError):  # OverflowError: "1e309" is infinity
            raise ValueError(f"expected an integer from {low} to {high}") from None
        if not low <= number <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return int(number)

    return parse


def _float(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Any:
    lo, hi = ("(" if low_open else "[", ")" if high_open else "]")
    allowed = f"expected a number in {lo}{low:g}, {high:g}{hi}"

    def parse(value: Any) -> float:
        try:
            number = float(value)
        except (ValueError, TypeError):
            raise ValueError(allowed) from None
        if number != number or (number <= low if low_open else number < low):
            raise ValueError(allowed)
        if number >= high if high_open else number > high:
            raise ValueError(allowed)
        return number

    return parse


def _keyword(choices: tuple[str, ...]) -> Any:
    def parse(value: Any) -> str:
        text = str(value).strip().upper()
        if text not in choices:
            raise ValueError(f"allowed values are {', '.join(choices)}")
        return text

    return parse


def _optional(parser: Any) -> Any:
    def parse(value: Any) -> Any:
        return parser(value) if _given(value) else None

    return parse


def _json_object(value: Any) -> dict[str, Any]:
    if not _given(value):
        return {}
    value = _json(value)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


PRETRAINED_FORMS = ("uri", "itemId", "url")


def _pretrained_model(value: Any) -> dict[str, Any]:
    """``{"uri": ...}``, ``{"itemId": ...}``, ``{"url": ...}``, or a bare data-store path (as Pro sends it)."""
    if not _given(value):
        return {}
    if isinstance(value, str) and not value.strip().startswith("{"):
        return {"uri": value.strip()}
    value = _json_object(value)
    forms = [k for k in PRETRAINED_FORMS if value.get(k)]
    if len(forms) != 1:
        raise ValueError('expected one of {"uri": "/fileShares/.../model.dlpk"}, {"itemId": ...}, {"url": ...}')
    return {forms[0]: str(value[forms[0]])}


def _json_list(value: Any) -> list[Any] | None:
    if not _given(value):
        return None
    value = _json(value)
    if not isinstance(value, list):
        raise ValueError('expected a JSON list of [transform, settings] pairs, e.g. [["rotate", "45.0;0.3"]]')
    return value


class TrainParams(BaseModel):
    """One TrainDeepLearningModel request after parsing. Field names are the wire names."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    in_folder: Annotated[list[str], BeforeValidator(_in_folder)]
    output_name: Annotated[OutputName, BeforeValidator(_output_name)]
    model_type: Annotated[str, BeforeValidator(_keyword(catalog.ALL_MODEL_TYPES))]
    arguments: Annotated[dict[str, Any], BeforeValidator(_arguments)] = {}
    batch_size: Annotated[int, BeforeValidator(_optional(_int(1, 1024)))] = 2
    max_epochs: Annotated[int, BeforeValidator(_optional(_int(1, 10000)))] = 20
    # None (or 0) means: find it with the learning-rate finder
    learning_rate: Annotated[float | None, BeforeValidator(_optional(_float(0, 10)))] = None
    backbone_model: Annotated[str | None, BeforeValidator(_optional(_keyword(catalog.ALL_BACKBONES)))] = None
    validation_percent: Annotated[float, BeforeValidator(_optional(_float(0, 100, low_open=True, high_open=True)))] = (
        10.0
    )
    pretrained_model: Annotated[dict[str, str], BeforeValidator(_pretrained_model)] = {}
    stop_training: Annotated[bool, BeforeValidator(_optional(_bool))] = True
    freeze_model: Annotated[bool, BeforeValidator(_optional(_bool))] = True
    overwrite_model: Annotated[bool, BeforeValidator(_optional(_bool))] = False
    context: Annotated[dict[str, Any], BeforeValidator(_json_object)] = {}
    data_augmentation: Annotated[str, BeforeValidator(_optional(_keyword(("DEFAULT", "NONE", "CUSTOM", "FILE"))))] = (
        "DEFAULT"
    )
    augmentation_parameters: Annotated[list[Any] | None, BeforeValidator(_json_list)] = None
    chip_size: Annotated[int | None, BeforeValidator(_optional(_int(8, 16384)))] = None
    resize_to: Annotated[int | None, BeforeValidator(_optional(_int(8, 16384)))] = None
    weight_init_scheme: Annotated[str, BeforeValidator(_optional(_keyword(("RANDOM", "RED_BAND", "ALL_RANDOM"))))] = (
        "RANDOM"
    )
    monitor: Annotated[str, BeforeValidator(_optional(_keyword(catalog.MONITORS)))] = "VALID_LOSS"

    @model_validator(mode="before")
    @classmethod
    def _defaults_for_blanks(cls, data: Any) -> Any:
        # An empty string means "not given": let the field default apply.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k in REQUIRED or _given(v)}
        return data

    @field_validator("learning_rate")
    @classmethod
    def _zero_means_find(cls, value: float | None) -> float | None:
        return None if value == 0 else value

    def _fits_mmdet_model(self, info: catalog.ModelTypeInfo) -> None:
        model = catalog.openmmlab_model(info.keyword, self.arguments)
        backbone = self.backbone_model or info.default_backbone
        if model in catalog.MMDET_BOTTLENECK_ONLY and backbone in ("RESNET18", "RESNET34"):
            raise ParameterError(
                "backbone_model",
                f"mmdet's {model} replaces convolutions of ResNet's bottleneck blocks, which {backbone} does not have: "
                "choose RESNET50, RESNET101 or RESNET152.",
            )

    @model_validator(mode="after")
    def _fits_model_type(self) -> TrainParams:
        info = catalog.BUILT.get(self.model_type)
        if self.model_type in catalog.REFUSED:
            reason = catalog.REFUSED[self.model_type]
            raise ParameterError("model_type", f"'{self.model_type}' cannot be trained by this server: {reason}")
        if info is None:
            raise ParameterError(
                "model_type",
                f"'{self.model_type}' is an ArcGIS model type geotrain does not train yet. "
                f"Model types available: {', '.join(catalog.built_model_types())}.",
            )
        if self.backbone_model in info.backbones_not_yet:
            raise ParameterError(
                "backbone_model",
                f"'{self.backbone_model}' is not supported yet for {info.keyword}. "
                f"Available: {', '.join(info.backbones_built)}.",
            )
        if self.backbone_model is not None and self.backbone_model not in info.backbones:
            raise ParameterError(
                "backbone_model",
                f"'{self.backbone_model}' is not a backbone of {info.keyword}. Allowed: "
                f"{', '.join(info.backbones) or 'none (it has no backbone: leave backbone_model empty)'}.",
            )
        for name, value in self.arguments.items():
            if name in info.arguments_not_yet:
                raise ParameterError("arguments", f"'{name}' is not supported by geotrain yet for {info.keyword}.")
            if name not in info.arguments:
                allowed = ", ".join(sorted(info.arguments))
                raise ParameterError("arguments", f"unknown argument '{name}' for {info.keyword}. Allowed: {allowed}.")
            _check_argument(info, name, value)
        if info.family == "object_tracking":
            self.windows()
        if info.keyword == "MMDETECTION":
            self._fits_mmdet_model(info)
        if self.monitor not in info.monitors:
            raise ParameterError(
                "monitor", f"'{self.monitor}' does not apply to {info.keyword}. Allowed: {', '.join(info.monitors)}."
            )
        if self.data_augmentation in ("CUSTOM", "FILE") and info.family not in AUGMENTED_FAMILIES:
            raise ParameterError(
                "data_augmentation",
                f"{self.data_augmentation} is not supported yet for {info.keyword}. Allowed: DEFAULT, NONE.",
            )
        if self.data_augmentation == "CUSTOM":
            if self.augmentation_parameters is None:
                raise ParameterError("augmentation_parameters", "data_augmentation CUSTOM needs them.")
            try:
                augmentation.custom_plan(self.augmentation_parameters).check_crop(self.chip_size)
            except ValueError as exc:
                raise ParameterError("augmentation_parameters", f"{exc}.") from None
        elif self.augmentation_parameters is not None:
            raise ParameterError("augmentation_parameters", "applies only with data_augmentation CUSTOM.")
        if self.resize_to is not None and info.family == "pixel_classification":
            raise ParameterError("resize_to", f"does not apply to {info.keyword} (Classified_Tiles).")
        processor = self.context.get("processorType")
        if processor is not None and str(processor).upper() not in ("CPU", "GPU"):
            raise ParameterError("context", f"processorType '{processor}' is not allowed. Allowed: CPU, GPU.")
        try:
            parallelism(self.context)
        except ValueError as exc:
            raise ParameterError("context", f"{exc}.") from None
        try:
            if _bool(self.context.get("compile", False)) not in (True, False):
                raise ValueError
        except ValueError:
            raise ParameterError(
                "context", f"compile '{self.context['compile']}' is not allowed. Allowed: true, false."
            ) from None
        if self.compile_model and info.family not in COMPILED_FAMILIES:
            raise ParameterError(
                "context", f"compile applies to pixel and object classification models, not to {self.model_type}."
            )
        return self

    def processor_label(self) -> str | None:
        """The worker label the job needs: "gpu" or "cpu" as context.processorType asks, else None."""
        processor = self.context.get("processorType")
        return str(processor).lower() if processor is not None else None

    @property
    def compile_model(self) -> bool:
        """Whether the context asks for the network to be compiled (torch.compile) before training."""
        return _bool(self.context.get("compile", False)) is True

    def parallelism(self) -> Parallelism:
        """How many training processes (GPUs, or CPU processes) the context asks for."""
        return parallelism(self.context)

    def augmentation_plan(self, transforms_file: Path | None) -> augmentation.Plan:
        """The transforms of CUSTOM or FILE (``transforms_file``: the export's transforms.json, if any);
        an empty plan for DEFAULT and NONE. Raises ValueError for a FILE that is missing or wrong."""
        if self.data_augmentation == "CUSTOM" and self.augmentation_parameters is not None:
            return augmentation.custom_plan(self.augmentation_parameters)
        if self.data_augmentation == "FILE":
            if transforms_file is None:
                raise ValueError(
                    f"FILE reads {augmentation.TRANSFORMS_FILE} from the training-data folder, and there is none; "
                    "put one there, or use DEFAULT, NONE or CUSTOM"
                )
            try:
                plan = augmentation.read_transforms(transforms_file)
                plan.check_crop(self.chip_size)
            except ValueError as exc:
                raise ValueError(f"{augmentation.TRANSFORMS_FILE}: {exc}") from None
            return plan
        return augmentation.Plan()

    def crop_size(self, plan: augmentation.Plan) -> int | None:
        """The training crop: chip_size, else the plan's crop size, else None (the exported tile size)."""
        return self.chip_size or plan.crop_size

    @property
    def backbone(self) -> str:
        return self.backbone_model or catalog.BUILT[self.model_type].default_backbone

    def argument(self, name: str, default: Any) -> Any:
        return self.arguments.get(name, default)

    def windows(self) -> tuple[int, int]:
        """SIAMMASK's exemplar and search window sides: exemplar_size (or chip_size: arcgis.learn's SiamMask
        records its exemplar's side as its chip size; 127), instance_size (255, or twice the exemplar's plus one
        when the exemplar's is given)."""
        given = self.arguments.get("exemplar_size", self.arguments.get("chip_size", self.chip_size))
        exemplar = int(given or EXEMPLAR_SIZE)
        if not 17 <= exemplar <= 512:  # chip_size's own range is wider
            raise ParameterError(
                "chip_size", f"{exemplar} is not allowed for SIAMMASK. Expected the exemplar's side: 17 to 512 pixels."
            )
        instance = int(self.arguments.get("instance_size", 2 * exemplar + 1))
        if instance < exemplar + 16:
            raise ParameterError(
                "arguments",
                f"'instance_size' = {instance} is not allowed. Expected at least the exemplar's side ({exemplar}) plus "
                "16: the search window must have room for the exemplar to move in.",
            )
        return exemplar, instance


EXEMPLAR_SIZE = 127  # SiamMask's exemplar side (its search window: 255)

# arcgis.learn's metric names, as Pro passes them in `arguments`, -> the 12.0 monitor keywords
MONITOR_ARGUMENTS = {
    "valid_loss": "VALID_LOSS", "accuracy": "ACCURACY", "valid_miou": "MIOU", "miou": "MIOU",
    "average_precision": "AVERAGE_PRECISION", "precision": "PRECISION", "recall": "RECALL", "f1": "F1_SCORE",
    "f1_score": "F1_SCORE", "dice": "DICE", "corpus_bleu": "CORPUS_BLEU", "mIOU": "MIOU",
}  # fmt: skip


def _number(value: Any, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def _numbers(value: Any, low: float, high: float) -> bool:
    return isinstance(value, list | tuple) and len(value) > 0 and all(_number(v, low, high) for v in value)


def _decode_params(value: Any) -> bool:
    if not isinstance(value, dict) or not set(value) <= set(catalog.DECODE_DEFAULTS):
        return False
    sizes = [value.get(k, 100) for k in ("embed_size", "hidden_size", "attention_size")]
    whole = all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 2048 for v in sizes)
    return (
        whole
        and _number(value.get("teacher_forcing", 1), 0, 1)
        and _number(value.get("dropout", 0.1), 0, 0.9)
        and value.get("pretrained_emb", False) is False
    )


def _check_argument(info: catalog.ModelTypeInfo, name: str, value: Any) -> None:
    ok: bool
    match name:
        case "grids":
            ok = value is None or (_numbers(value, 1, 64) and all(isinstance(v, int) for v in value))
        case "zooms" | "scales":
            ok = _numbers(value, 0.01, 100) and len(value) <= 16
        case "ratios" if info.keyword == "SSD":
            pairs = isinstance(value, list | tuple) and 0 < len(value) <= 16
            ok = pairs and all(_numbers(v, 0.01, 100) and len(v) == 2 for v in value)
        case "ratios":
            ok = _numbers(value, 0.01, 100) and len(value) <= 16
        case "ssd_version":
            ok = value in (1, 2) and not isinstance(value, bool)
        case "n_bands":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1024
        case "bias":
            ok = _number(value, -20, 20)
        case "drop":
            ok = _number(value, 0, 0.99)
        case "location_loss_factor":
            ok = value is None or _number(value, 0, 1)
        case _ if name.endswith(("_thresh", "_fraction")) and name.startswith(("rpn_", "box_")):
            ok = _number(value, 0, 1)
        case _ if name.startswith(("rpn_", "box_")):
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100000
        case "anchors":
            pairs = value is None or (isinstance(value, list | tuple) and len(value) == 9)
            ok = pairs and (value is None or all(_numbers(v, 1, 4096) and len(v) == 2 for v in value))
        case "pyramid_sizes":
            ok = _numbers(value, 1, 64) and len(value) <= 8 and all(isinstance(v, int) for v in value)
        case (
            "class_balancing"
            | "focal_loss"
            | "pretrained_backbone"
            | "mixup"
            | "oversample"
            | "use_unet"
            | "use_net"
            | "unet_aux_loss"
            | "keep_dilation"
            | "pointrend"
        ):
            ok = isinstance(value, bool)
        case "dice_loss_fraction":
            ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
        case "dice_loss_average":
            ok = value in ("micro", "macro")
        case "mtl_model":
            ok = value in ("hourglass", "linknet")
        case "orient_bin_size":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 90
        case "gaussian_thresh":
            ok = _number(value, 0, 1)
        case "orient_theta":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64
        case "gen_network":
            ok = value in ("global", "local")
        case "n_local_enhancers":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 3
        case "n_blocks_local":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 32
        case "norm":
            ok = value in ("instance", "batch")
        case "n_gen_filters" | "n_dscr_filters":
            ok = isinstance(value, int) and not isinstance(value, bool) and 8 <= value <= 256
        case "n_downsample_global":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 6
        case "n_layers_dscr":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5
        case "n_dscr":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4
        case "n_blocks_global" | "gen_blocks":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 32
        case "lsgan" | "feat_loss" | "vgg_loss":
            ok = isinstance(value, bool)
        case "lambda_feat" | "lambda_l1":
            ok = _number(value, 0, 1000)
        case "downsample_factor":
            ok = isinstance(value, int) and not isinstance(value, bool) and 2 <= value <= 16
        case "attention_type":
            ok = value in ("PAM", "BAM")
        case "queries":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 300
        case "model" if info.keyword in catalog.OPENMMLAB_DEFAULT_MODEL:
            # names only: an OpenMMLab config is a Python file, and a request's file is never run
            names = catalog.mmseg_model_names() if info.keyword == "MMSEGMENTATION" else catalog.mmdet_model_names()
            if value not in names:
                why = catalog.MMDET_NOT_OFFERED.get(value) if info.keyword == "MMDETECTION" else None
                raise ParameterError(
                    "arguments",
                    (f"'model' = {value!r} is not offered: {why}. " if why else f"'model' = {value!r} is not allowed. ")
                    + f"Expected one of {', '.join(names)} (a model's name: geotrain does not run config files "
                    "from requests).",
                )
            ok = True
        case "exemplar_size":
            ok = isinstance(value, int) and not isinstance(value, bool) and 17 <= value <= 512
        case "instance_size":
            ok = isinstance(value, int) and not isinstance(value, bool) and 32 <= value <= 1024
        case "frame_range":
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10000
        case "n_masks":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 200
        case "decode_params" | "decoder_params":
            ok = _decode_params(value)
        case "ignore_classes":
            ok = isinstance(value, list | tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        case "chip_size":
            ok = isinstance(value, int) and not isinstance(value, bool) and 8 <= value <= 16384
        case "monitor":
            ok = MONITOR_ARGUMENTS.get(str(value)) in info.monitors
        case _:
            ok = True
    if not ok:
        allowed = info.arguments.get(name, "a valid value")
        raise ParameterError("arguments", f"'{name}' = {value!r} is not allowed. Expected {allowed}.")


def parse(raw: dict[str, Any]) -> TrainParams:
    """Parse the submitted form; raise ParameterError naming every bad parameter."""
    missing = [name for name in REQUIRED if not _given(raw.get(name))]
    if missing:
        raise ParameterError(missing[0], "this parameter is required.")
    try:
        params = TrainParams.model_validate(raw)
    except ValidationError as exc:
        raise _to_parameter_error(exc) from None
    return _apply_argument_aliases(params)


def _apply_argument_aliases(params: TrainParams) -> TrainParams:
    """Pro passes chip_size and monitor as arguments; the 12.0 parameters win when both are given."""
    update: dict[str, Any] = {}
    if params.chip_size is None and "chip_size" in params.arguments:
        update["chip_size"] = params.arguments["chip_size"]
    if "monitor" in params.arguments and params.monitor == "VALID_LOSS":
        update["monitor"] = MONITOR_ARGUMENTS[params.arguments["monitor"]]
    return params.model_copy(update=update) if update else params


def _to_parameter_error(exc: ValidationError) -> ParameterError:
    details = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "request"
        ctx_error = (err.get("ctx") or {}).get("error")
        problem = str(ctx_error) if ctx_error is not None else err["msg"]
        value = err.get("input")
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        details.append(f"Invalid value for parameter '{name}': {shown[:200]!r} - {problem}.")
    error = ParameterError(str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else "request", "")
    error.details = details
    return error


def echo(parsed: TrainParams, name: str) -> Any:
    """A parameter's value after parsing, in the shape clients sent it (inputs/<name>)."""
    if name == "output_name":
        return parsed.output_name.model_dump(exclude_none=True, exclude_defaults=True)
    if name == "in_folder":
        return ",".join(parsed.in_folder)
    if name == "backbone_model":
        return parsed.backbone
    return parsed.model_dump(mode="json")[name]
