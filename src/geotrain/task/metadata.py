"""The GPServer service resource and the TrainDeepLearningModel task resource, as ArcGIS clients read them."""

from __future__ import annotations

from typing import Any

from geotrain.task import catalog, model_info

TASK_NAME = "TrainDeepLearningModel"
SERVICE_PATH = "/arcgis/rest/services/System/RasterAnalysisTools/GPServer"
CURRENT_VERSION = 12.0  # the arcgis client sends the six 12.0 parameters only from 12.0 on

ASYNC = "esriExecutionTypeAsynchronous"
_IN, _OUT = "esriGPParameterDirectionInput", "esriGPParameterDirectionOutput"
_REQ, _OPT, _DERIVED = "esriGPParameterTypeRequired", "esriGPParameterTypeOptional", "esriGPParameterTypeDerived"


def _param(
    name: str,
    data_type: str,
    display: str,
    description: str,
    default: Any = None,
    required: bool = False,
    choices: tuple[str, ...] | None = None,
    category: str = "",
) -> dict[str, Any]:
    param: dict[str, Any] = {
        "name": name,
        "dataType": data_type,
        "displayName": display,
        "description": description,
        "direction": _IN,
        "defaultValue": default,
        "parameterType": _REQ if required else _OPT,
        "category": category,
    }
    if choices is not None:
        param["choiceList"] = list(choices)
    return param


def task_parameters() -> list[dict[str, Any]]:
    built = ", ".join(catalog.built_model_types())
    return [
        _param("in_folder", "GPString", "Input Training Data",
               "Data-store path of the exported training chips, e.g. /fileShares/chips/buildings; several "
               "folders comma-separated.", required=True),
        _param("output_name", "GPString", "Output Model",
               'The model name as {"name": "..."} or a file-share folder as {"uri": "/fileShares/<store>/<folder>"}.',
               required=True),
        _param("model_type", "GPString", "Model Type",
               f"The model to train. Available in this server: {built}.", required=True,
               choices=catalog.ALL_MODEL_TYPES),
        _param("arguments", "GPString", "Model Arguments",
               'Model arguments as a JSON object of strings, e.g. {"class_balancing": "True"}.'),
        _param("batch_size", "GPLong", "Batch Size", "Chips per training step.", default=2),
        _param("max_epochs", "GPLong", "Max Epochs", "The most passes over the training chips.", default=20),
        _param("learning_rate", "GPDouble", "Learning Rate",
               "Empty or 0: found by the learning-rate finder."),
        _param("backbone_model", "GPString", "Backbone Model",
               "The backbone; empty means the model type's default.", choices=catalog.ALL_BACKBONES),
        _param("validation_percent", "GPDouble", "Validation %",
               "Percent of chips held out for validation.", default=10),
        _param("pretrained_model", "GPString", "Pretrained Model",
               'A model to fine-tune: {"uri": "/fileShares/.../model.dlpk"}.'),
        _param("stop_training", "GPBoolean", "Stop when model stops improving",
               "Early stopping on the monitored metric.", default=True),
        _param("freeze_model", "GPBoolean", "Freeze Model", "Keep the pretrained backbone frozen.", default=True),
        _param("overwrite_model", "GPBoolean", "Overwrite Model",
               "Replace an existing model of the same name.", default=False),
        _param("context", "GPString", "Context", 'Environment settings, e.g. {"processorType": "GPU"}.'),
        _param("data_augmentation", "GPString", "Data Augmentation", "Training augmentation.",
               default="DEFAULT", choices=("DEFAULT", "NONE", "CUSTOM", "FILE")),
        _param("augmentation_parameters", "GPString", "Augmentation Parameters",
               'With CUSTOM: a JSON list of [transform, settings] pairs, e.g. [["rotate", "45.0;0.3"]].'),
        _param("chip_size", "GPLong", "Chip Size", "Training crop size in pixels; empty means the exported tile size."),
        _param("resize_to", "GPString", "Resize To", "Resize chips before cropping (detection and labeled tiles)."),
        _param("weight_init_scheme", "GPString", "Weight Initialization Scheme",
               "How the first layer is initialised for multispectral data.", default="RANDOM",
               choices=("RANDOM", "RED_BAND", "ALL_RANDOM")),
        _param("monitor", "GPString", "Monitor Metric", "The metric early stopping and checkpoints watch.",
               default="VALID_LOSS", choices=catalog.MONITORS),
        {
            "name": "out_item",
            "dataType": "GPString",
            "displayName": "Output Model Item",
            "description": "The trained deep learning package.",
            "direction": _OUT,
            "defaultValue": None,
            "parameterType": _DERIVED,
            "category": "",
        },
    ]  # fmt: skip


def query_parameters() -> list[dict[str, Any]]:
    """QueryDeepLearningModelInfo's parameters."""
    model = _param(
        model_info.INPUT, "GPString", "Input Model",
        'The model: {"uri": "/fileShares/.../model.dlpk"} (or an .emd), or the model definition as JSON.',
        required=True,
    )  # fmt: skip
    result = {
        "name": model_info.RESULT,
        "dataType": "GPString",
        "displayName": "Output Model Info",
        "description": 'The model\'s settings, as {"modelInfo": "<JSON text>"}.',
        "direction": _OUT,
        "defaultValue": None,
        "parameterType": _DERIVED,
        "category": "",
    }
    return [model, result]


def parameter(name: str, task: str = TASK_NAME) -> dict[str, Any] | None:
    params = query_parameters() if task == model_info.TASK else task_parameters()
    return next((p for p in params if p["name"] == name), None)


def query_task_resource(help_url: str) -> dict[str, Any]:
    return {
        "name": model_info.TASK,
        "displayName": "Query Deep Learning Model Info",
        "description": "The settings of a deep learning model, read from its package or model definition.",
        "category": "",
        "helpUrl": help_url,
        "executionType": ASYNC,
        "parameters": query_parameters(),
    }


def task_resource(help_url: str) -> dict[str, Any]:
    return {
        "name": TASK_NAME,
        "displayName": "Train Deep Learning Model",
        "description": (
            "Trains a deep learning model from exported training chips and writes a deep learning package (.dlpk)."
        ),
        "category": "",
        "helpUrl": help_url,
        "executionType": ASYNC,
        "parameters": task_parameters(),
    }


def service_resource() -> dict[str, Any]:
    return {
        "currentVersion": CURRENT_VERSION,
        "serviceDescription": "geotrain: deep learning training on your own hardware.",
        "tasks": [TASK_NAME, model_info.TASK],
        "executionType": ASYNC,
        "resultMapServerName": "",
        "maximumRecords": 1000,
        "capabilities": "",
    }
