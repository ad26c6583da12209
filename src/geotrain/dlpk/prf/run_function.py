"""Run a package's inference function on one block of pixels, the way ArcGIS drives a Python raster function.

Started as a script in a fresh interpreter (``python -I -S run_function.py ...``): only the extracted
package and the folders holding torch, torchvision and numpy are importable, and importing geotrain fails,
so a function that leans on anything else is caught here rather than in ArcGIS.

    run_function.py <package folder> <emd file> <pixels .npy> <output file> <scalars JSON> <library folder>...
    run_function.py --many <manifest: a JSON list of [folder, emd, pixels, output, scalars JSON]> <library folder>...

The output file gets ``updatePixels``' output_pixels (.npy) for pixel classification, ``vectorize``'s
output_vectors (JSON text) for detection and object classification. For object classification the pixels
file is an .npz of one block per object (bands x rows x cols, sizes may differ), handed over as
``rasters_pixels``. For a tracker (SiamMask) the pixels file is an .npz of frames and the scalars hold
``detections`` (boxes in the first frame): the output file gets each frame's tracks as JSON, and
``<output>.masks.npz`` their masks.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
from typing import Any


class _NoGeotrain(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "geotrain" or name.startswith("geotrain."):
            raise ImportError(f"an inference function must not import {name}")
        return None


def main(argv: list[str]) -> int:
    if argv[0] == "--many":
        # several packages, one after the other in this one interpreter (as one ArcGIS session runs them)
        manifest, *libraries = argv[1:]
        with open(manifest, encoding="utf-8") as f:
            runs = json.load(f)
        base = [p for p in sys.path if "site-packages" not in p]
        for run in runs:
            sys.path[:] = [run[0], *base]
            code = _run([*run, *libraries])
            if code:
                return code
        return 0
    return _run(argv)


def _run(argv: list[str]) -> int:
    folder, emd_path, pixels_path, output_path, scalars_json, *libraries = argv
    if not any(isinstance(finder, _NoGeotrain) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NoGeotrain())
    sys.path[:] = [folder, *[p for p in sys.path if "site-packages" not in p], *libraries]
    import numpy as np

    with open(emd_path, encoding="utf-8-sig") as f:
        emd = json.load(f)
    function_file = os.path.join(folder, str(emd["InferenceFunction"]))
    stem = os.path.splitext(os.path.basename(function_file))[0]
    spec = importlib.util.spec_from_file_location(stem, function_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, stem)()  # ArcGIS: the class is named like its file
    function.initialize(model=emd_path, device=-1)
    kind = emd.get("ModelType")
    names = [p["name"] for p in function.getParameterInfo()]
    tracking = kind == "ObjectTracking" and hasattr(function, "update")
    # a block per feature
    per_object = not tracking and kind in ("ObjectClassification", "ObjectTracking", "ImageCaptioner")
    first = "rasters" if per_object else "raster"
    if names[:2] != [first, "model"]:
        raise ValueError(f"getParameterInfo must begin with {first} and model, not {names[:2]}")
    scalars = json.loads(scalars_json)
    detections = scalars.pop("detections", [])
    configuration = function.getConfiguration(**{"padding": 0, **scalars})
    if tracking:
        return _track(function, pixels_path, output_path, detections, configuration)
    if per_object:
        with np.load(pixels_path) as stored:
            blocks = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        masks = [np.ones_like(b, dtype=np.uint8) for b in blocks]
        return _vectorize(function, kind, output_path, configuration, rasters_pixels=blocks, rasters_mask=masks)
    pixels = np.load(pixels_path)
    mask = np.ones_like(pixels, dtype=np.uint8)
    if kind in ("ObjectDetection", "InstanceDetection"):
        return _vectorize(function, kind, output_path, configuration, raster_pixels=pixels, raster_mask=mask)
    info = function.updateRasterInfo(output_info={"bandCount": len(pixels), "pixelType": "u1"})["output_info"]
    props = {"pixelType": info["pixelType"], "width": pixels.shape[2], "height": pixels.shape[1]}
    blocks = function.updatePixels((0.0, 0.0), pixels.shape[1:], props, raster_pixels=pixels, raster_mask=mask)
    np.save(output_path, blocks["output_pixels"])
    return _finish(configuration)


def _track(
    function: Any, pixels_path: str, output_path: str, detections: list[Any], configuration: dict[str, Any]
) -> int:
    """A tracker: ``init`` on the first frame with ``detections``, ``update`` on each next one."""
    import numpy as np

    with np.load(pixels_path) as stored:
        frames = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    shown, masks = [], {}
    tracks = function.init(frames[0], detections)
    shown.append([{k: t[k] for k in ("id", "label", "bbox", "score")} for t in tracks])
    for n, frame in enumerate(frames[1:], start=1):
        tracks = function.update(frame)
        shown.append([{k: t[k] for k in ("id", "label", "bbox", "score")} for t in tracks])
        masks.update({f"frame{n}_track{t['id']}": np.asarray(t["mask"]) for t in tracks})
    with open(output_path, "w", encoding="utf-8") as f:
        json.dump({"frames": shown}, f)
    np.savez(output_path + ".masks.npz", **masks)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    return _finish(configuration)


def _vectorize(function: Any, kind: str, output_path: str, configuration: dict[str, Any], **blocks: Any) -> int:
    """The vector kinds (detection, object classification): fields, polygons, ``vectorize``'s JSON text."""
    json.loads(function.getFields())
    if function.getGeometryType() != 4:
        raise ValueError(f"{kind}: the geometry type must be 4 (polygon)")
    with open(output_path, "w", encoding="utf-8") as f:
        f.write(function.vectorize(**blocks)["output_vectors"])
    return _finish(configuration)


def _finish(configuration: dict[str, Any]) -> int:
    leaked = sorted(name for name in sys.modules if name.split(".")[0] == "geotrain")
    if leaked:
        raise ImportError(f"the inference function imported {leaked}")
    print(json.dumps({"configuration": {k: v for k, v in configuration.items() if k != "extractBands"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
