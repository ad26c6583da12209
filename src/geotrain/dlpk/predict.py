"""``geotrain predict``: a package's own inference function over a whole raster, tile by tile, as ArcGIS's
Classify Pixels / Detect Objects Using Deep Learning run it: a classified GeoTIFF with the input's size and
georeference, or GeoJSON features in the raster's coordinates. An object classifier classifies each polygon
of a GeoJSON file over the raster (Classify Objects Using Deep Learning), or the whole raster as one object.

The function is the package's code and runs in this process: predict only with packages you trust (the
server itself never runs code from a package).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.features import bounds as geometry_bounds
from rasterio.features import geometry_mask
from rasterio.windows import Window, from_bounds

from geotrain.dlpk.archive import PackageError, extract, read_emd
from geotrain.dlpk.prf.geotrain_runtime import load_sibling


def _function(emd_path: Path, emd: dict[str, Any]) -> Any:
    file = emd_path.parent / str(emd.get("InferenceFunction", ""))
    if not file.is_file():
        kind = emd.get("ModelType", "?")
        raise PackageError(f"the package has no inference function geotrain can run (ModelType {kind})")
    return getattr(load_sibling(str(file.parent), file.name), file.stem)()  # the class is named like its file


DETECTION = ("ObjectDetection", "InstanceDetection")


def default_output(package: Path, image: Path) -> Path:
    _, emd = read_emd(package)
    if emd.get("ModelType") == "ObjectClassification":
        return image.with_name(f"{image.stem}_objects.geojson")
    if emd.get("ModelType") in DETECTION:
        return image.with_name(f"{image.stem}_detections.geojson")
    return image.with_name(f"{image.stem}_classified.tif")


def predict(
    package: Path,
    image: Path,
    out: Path,
    padding: int | None = None,
    device: int = -2,
    threshold: float | None = None,
    features: Path | None = None,
) -> Path:
    """Run ``package`` over ``image`` into ``out``: for pixel classification a GeoTIFF of class values (0
    where nothing was classified), for detection a GeoJSON FeatureCollection (Class, Confidence in percent;
    each object from the tile holding its centre). ``padding``: pixels of each tile's border read but not
    kept (the function's default: a quarter of the chip); ``threshold``: detections' least confidence, 0..1
    (a multi-label classifier's least probability); ``features``: for an object classifier, a GeoJSON file
    of the objects (in the raster's coordinates)."""
    _, emd = read_emd(package)
    kind = emd.get("ModelType")
    if kind not in ("ImageClassification", "ObjectClassification", *DETECTION):
        raise PackageError(f"predict handles pixel and object classification and detection; this one is {kind}")
    if features is not None and kind != "ObjectClassification":
        raise PackageError("--features is for object classification packages")
    with tempfile.TemporaryDirectory(prefix="geotrain-predict-") as tmp:
        emd_path = extract(package, Path(tmp))
        function = _function(emd_path, emd)
        function.initialize(model=str(emd_path), device=device)
        scalars: dict[str, Any] = {} if padding is None else {"padding": padding}
        if threshold is not None:
            scalars["threshold"] = threshold
        config = function.getConfiguration(**scalars)
        if kind == "ObjectClassification":
            with rasterio.open(image) as src:
                return _classify_objects(function, src, [int(b) + 1 for b in config["extractBands"]], features, out)
        pad, tile_x, tile_y = int(config["padding"]), int(config["tx"]), int(config["ty"])
        if tile_x < 1 or tile_y < 1:
            raise PackageError(f"padding {pad} leaves nothing of the {emd['ImageWidth']} px tiles")
        with rasterio.open(image) as src:
            bands = [int(b) + 1 for b in config["extractBands"]]
            if max(bands) > src.count:
                raise PackageError(f"the model reads bands {bands} (1-based); {image.name} has {src.count}")
            if kind in DETECTION:
                return _detect(function, src, bands, (pad, tile_x, tile_y), out)
            return _classify(function, src, bands, (pad, tile_x, tile_y), out)


def _tiles(src: Any, bands: list[int], tiling: tuple[int, int, int]) -> Any:
    """(row, col, pixels, mask) of each tile, its padding read beyond the raster as zero (no data)."""
    pad, tile_x, tile_y = tiling
    for row in range(0, src.height, tile_y):
        for col in range(0, src.width, tile_x):
            window = Window(col - pad, row - pad, tile_x + 2 * pad, tile_y + 2 * pad)
            pixels = src.read(bands, window=window, boundless=True, fill_value=0)
            masks = src.read_masks(bands, window=window, boundless=True)
            yield row, col, pixels, (masks > 0).astype(np.uint8)


def _classify(function: Any, src: Any, bands: list[int], tiling: tuple[int, int, int], out: Path) -> Path:
    pad, tile_x, tile_y = tiling
    info = function.updateRasterInfo(output_info={"bandCount": len(bands), "pixelType": "u1"})
    pixel_type = np.dtype(info["output_info"]["pixelType"]).name
    result = np.zeros((src.height, src.width), dtype=pixel_type)
    for row, col, pixels, mask in _tiles(src, bands, tiling):
        blocks = function.updatePixels(
            (col, row), pixels.shape[1:], {"pixelType": pixel_type}, raster_pixels=pixels, raster_mask=mask
        )
        keep = blocks["output_pixels"][0, pad : pad + tile_y, pad : pad + tile_x]
        rows, cols = min(tile_y, src.height - row), min(tile_x, src.width - col)
        result[row : row + rows, col : col + cols] = keep[:rows, :cols]
    profile = src.profile.copy()
    profile.update(driver="GTiff", count=1, dtype=pixel_type, nodata=0, compress="lzw")
    for key in ("blockxsize", "blockysize", "tiled"):
        profile.pop(key, None)
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(result, 1)
        dst.update_tags(1, classes=json.dumps({int(c["Value"]): str(c["Name"]) for c in function.emd["Classes"]}))
    return out


def _classify_objects(function: Any, src: Any, bands: list[int], features: Path | None, out: Path) -> Path:
    """Each object's block of the raster through ``vectorize``: its bounding box, or a chip of the model's
    size centred on it where the EMD's CropSizeFixed is 1; pixels outside the polygon zeroed where
    BlackenAroundFeature is 1."""
    if max(bands) > src.count:
        raise PackageError(f"the model reads bands {bands} (1-based); the raster has {src.count}")
    objects: list[dict[str, Any]]
    if features is None:
        left, bottom, right, top = src.bounds
        ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
        objects = [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]
    else:
        objects = [f for f in json.loads(features.read_text()).get("features", []) if f.get("geometry")]
    emd = function.emd
    fixed, blacken = int(emd.get("CropSizeFixed", 1)) == 1, int(emd.get("BlackenAroundFeature", 0)) == 1
    blocks, masks = [], []
    for feature in objects:
        found = from_bounds(*geometry_bounds(feature["geometry"]), transform=src.transform)
        # to whole pixels, nearest: a corner a rounding error short of a pixel edge stays on it
        window = Window(
            round(found.col_off), round(found.row_off), max(1, round(found.width)), max(1, round(found.height))
        )
        if fixed and features is not None:  # the whole raster stays whole
            width, height = int(emd["ImageWidth"]), int(emd["ImageHeight"])
            centre_col, centre_row = window.col_off + window.width / 2, window.row_off + window.height / 2
            window = Window(round(centre_col - width / 2), round(centre_row - height / 2), width, height)
        pixels = src.read(bands, window=window, boundless=True, fill_value=0)
        mask = (src.read_masks(bands, window=window, boundless=True) > 0).astype(np.uint8)
        if blacken:
            outside = geometry_mask([feature["geometry"]], pixels.shape[1:], src.window_transform(window))
            mask[:, outside] = 0
        blocks.append(pixels)
        masks.append(mask)
    found = json.loads(function.vectorize(rasters_pixels=blocks, rasters_mask=masks)["output_vectors"])["features"]
    collection: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {
                    **(feature.get("properties") or {}),
                    "Class": result["attributes"]["Class"],
                    "Confidence": result["attributes"]["Confidence"],
                },
                "geometry": feature["geometry"],
            }
            for feature, result in zip(objects, found, strict=True)
        ],
    }
    return _write_geojson(collection, src, out)


def _detect(function: Any, src: Any, bands: list[int], tiling: tuple[int, int, int], out: Path) -> Path:
    pad = tiling[0]
    features = []
    for row, col, pixels, mask in _tiles(src, bands, tiling):
        found = json.loads(function.vectorize(raster_pixels=pixels, raster_mask=mask)["output_vectors"])
        for feature in found["features"]:
            # tile pixels -> raster pixels
            pixel_rings = [[(x + col - pad, y + row - pad) for x, y in ring] for ring in feature["geometry"]["rings"]]
            xs = [x for ring in pixel_rings for x, _ in ring]
            ys = [y for ring in pixel_rings for _, y in ring]
            cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
            if not (0 <= cx < src.width and 0 <= cy < src.height):
                continue  # found in the zeros a last tile reads beyond the raster's edge
            rings = [[list(src.transform * point) for point in ring] for ring in pixel_rings]
            attributes = feature["attributes"]
            features.append(
                {
                    "type": "Feature",
                    "properties": {"Class": attributes["Class"], "Confidence": attributes["Confidence"]},
                    "geometry": {"type": "Polygon", "coordinates": rings},
                }
            )
    return _write_geojson({"type": "FeatureCollection", "features": features}, src, out)


def _write_geojson(collection: dict[str, Any], src: Any, out: Path) -> Path:
    if src.crs is not None:
        # GDAL and QGIS read this member (RFC 7946 dropped it, but without it coordinates are taken as WGS 84)
        epsg = src.crs.to_epsg()
        name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else src.crs.to_wkt()
        collection["crs"] = {"type": "name", "properties": {"name": name}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(collection))
    return out
