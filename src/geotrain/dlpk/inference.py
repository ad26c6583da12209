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
    "ObjectClassification": ("GeotrainObjectClassifier.py", BESIDE),
    # DEEPSORT's re-identification network: each crop's identity, and its appearance descriptor
    "ObjectTracking": ("GeotrainObjectClassifier.py", BESIDE),
    # the pixel classifier's function giving class values and segment numbers
    "PanopticSegmenter": ("GeotrainPanopticSegmenter.py", (*BESIDE, "GeotrainPixelClassifier.py")),
    # the object classifier's function with a captioning network
    "ImageCaptioner": ("GeotrainImageCaptioner.py", (*BESIDE, "GeotrainObjectClassifier.py")),
    "SuperResolution": ("GeotrainImageTranslator.py", BESIDE),
    "Pix2Pix": ("GeotrainImageTranslator.py", BESIDE),
    "CycleGAN": ("GeotrainImageTranslator.py", BESIDE),
    "Pix2PixHD": ("GeotrainImageTranslator.py", BESIDE),
}
# models whose function is not their ModelType's (SiamMask shares ObjectTracking with DeepSort)
BY_MODEL_NAME = {
    # a tracker (init on a frame's boxes, update on each next frame), not a raster function
    "SiamMask": ("GeotrainObjectTracker.py", BESIDE),
}


def _entry(model_kind: str, model_name: str) -> tuple[str, tuple[str, ...]] | None:
    return BY_MODEL_NAME.get(model_name) or FUNCTIONS.get(model_kind)


def function_for(model_kind: str, model_name: str = "") -> str | None:
    """The file name ArcGIS finds in the EMD's InferenceFunction, or None where geotrain ships none yet."""
    entry = _entry(model_kind, model_name)
    return entry[0] if entry is not None else None


def files_for(model_kind: str, model_name: str = "") -> dict[str, bytes]:
    """The files a package carries for ArcGIS to run it: the function and what it loads."""
    entry = _entry(model_kind, model_name)
    if entry is None:
        return {}
    function, beside = entry
    folder = resources.files("geotrain.dlpk.prf")
    return {name: folder.joinpath(name).read_bytes() for name in (function, *beside)}
