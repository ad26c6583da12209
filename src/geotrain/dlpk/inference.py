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


def function_for(model_kind: str) -> str | None:
    """The file name ArcGIS finds in the EMD's InferenceFunction, or None where geotrain ships none yet."""
    return FUNCTIONS[model_kind][0] if model_kind in FUNCTIONS else None


def files_for(model_kind: str) -> dict[str, bytes]:
    """The files a package carries for ArcGIS to run it: the function and what it loads."""
    if model_kind not in FUNCTIONS:
        return {}
    function, beside = FUNCTIONS[model_kind]
    folder = resources.files("geotrain.dlpk.prf")
    return {name: folder.joinpath(name).read_bytes() for name in (function, *beside)}
