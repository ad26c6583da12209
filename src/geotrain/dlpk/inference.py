"""The inference function (Python raster function) each package carries, by the EMD's ModelType."""

from __future__ import annotations

from importlib import resources

# what every function loads from beside it
BESIDE = ("geotrain_networks.py", "geotrain_runtime.py")
# each function, and those files
FUNCTIONS = {
    "ImageClassification": ("GeotrainPixelClassifier.py", BESIDE),
    "ObjectDetection": ("GeotrainObjectDetector.py", BESIDE),
    "InstanceDetection": ("GeotrainObjectDetector.py", BESIDE),
}
# model types whose networks the portable files do not rebuild yet
NOT_PORTABLE = ("geotrain.yolov3",)


def function_for(model_kind: str, configuration: str) -> str | None:
    """The file name ArcGIS finds in the EMD's InferenceFunction, or None where geotrain ships none yet."""
    if configuration in NOT_PORTABLE or model_kind not in FUNCTIONS:
        return None
    return FUNCTIONS[model_kind][0]


def files_for(model_kind: str, configuration: str) -> dict[str, bytes]:
    """The files a package carries for ArcGIS to run it: the function and what it loads."""
    if function_for(model_kind, configuration) is None:
        return {}
    function, beside = FUNCTIONS[model_kind]
    folder = resources.files("geotrain.dlpk.prf")
    return {name: folder.joinpath(name).read_bytes() for name in (function, *beside)}
