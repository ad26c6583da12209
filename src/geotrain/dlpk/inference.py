"""The inference function (Python raster function) each package carries, by the EMD's ModelType."""

from __future__ import annotations

from importlib import resources

NETWORKS = "geotrain_networks.py"
FUNCTIONS = {"ImageClassification": "GeotrainPixelClassifier.py"}


def function_for(model_kind: str) -> str | None:
    """The file name ArcGIS finds in the EMD's InferenceFunction, or None where geotrain ships none yet."""
    return FUNCTIONS.get(model_kind)


def files_for(model_kind: str) -> dict[str, bytes]:
    """The files a package of ``model_kind`` carries for ArcGIS to run it: the function and the networks."""
    function = function_for(model_kind)
    if function is None:
        return {}
    folder = resources.files("geotrain.dlpk.prf")
    return {name: folder.joinpath(name).read_bytes() for name in (function, NETWORKS)}
