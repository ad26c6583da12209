"""Every built model type trained at its defaults (only in_folder, output_name, model_type and one epoch given:
its default backbone, arguments, batch size and the learning-rate finder), its package checked, on a small
generated export of its format. The HTTP tests shrink models to run quickly; this is what catches a default
that fails (PIX2PIXHD's four halvings, the Hungarian matcher on the finder's NaN costs did).

    .venv/bin/python bench/defaults.py [MODEL_TYPE ...]

Prints OK or FAIL, the seconds and the backbone per model type (CPU: about 8 minutes for all of them).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geotrain.task import catalog
from tests import formats
from tests.conftest import in_share
from tests.exports import (
    ExportSpec,
    write_change_tiles,
    write_classified_tiles,
    write_edge_tiles,
    write_road_tiles,
    write_translation_tiles,
)
from tests.integration.test_train_shapes import _train


def export(mt: str, root: Path) -> None:
    c = root / mt
    if mt in ("UNET", "PSPNET", "DEEPLAB", "MMSEGMENTATION"):
        write_classified_tiles(c, ExportSpec(chips=6))
    elif mt == "CHANGEDETECTOR":
        write_change_tiles(c, ExportSpec(chips=6, bands=3, dtype="uint8", values=(2, 5), absent=None))
    elif mt in ("HED_EDGEDETECTOR", "BDCN_EDGEDETECTOR"):
        write_edge_tiles(c, ExportSpec(chips=6, values=(6,), absent=None, seed=5))
    elif mt in ("MULTITASK_ROADEXTRACTOR", "CONNECTNET"):
        write_road_tiles(c, ExportSpec(chips=6, bands=3, dtype="uint8", values=(4,), absent=None, seed=7))
    elif mt == "SUPERRESOLUTION":
        write_translation_tiles(c, ExportSpec(chips=6, seed=6), second=False)
    elif mt in ("PIX2PIX", "PIX2PIXHD"):
        write_translation_tiles(c, ExportSpec(chips=6, bands=3, dtype="uint8"), second=True)
    elif mt == "CYCLEGAN":
        formats.cyclegan(c)
    elif mt == "IMAGECAPTIONER":
        formats.captions(c)
    elif mt == "DEEPSORT":
        formats.identities(c)
    elif mt == "FEATURE_CLASSIFIER":
        formats.labeled_tiles(c, chips=6)
    elif mt == "MAXDEEPLAB":
        formats.panoptic(c, chips=6)
    elif mt in ("SSD", "RETINANET", "YOLOV3", "FASTERRCNN", "DETREG", "MMDETECTION"):
        formats.pascal_voc(c, chips=6, size=48)
    elif mt == "MASKRCNN":
        formats.rcnn_masks(c, chips=4)
    elif mt == "SIAMMASK":
        formats.tracks(c, frames=6)
    else:
        raise ValueError(mt)


def main() -> None:
    only = sys.argv[1:] or sorted(catalog.BUILT)
    with tempfile.TemporaryDirectory() as folder:
        for mt in only:
            tmp = Path(folder) / mt
            export(mt, tmp / "chips")
            start = time.time()
            try:
                emd, _ = _train(
                    tmp,
                    {"in_folder": f"/fileShares/c/{mt}", "output_name": json.dumps(in_share(mt.lower())),
                     "model_type": mt, "max_epochs": "1"},
                    check_packages=True,
                )  # fmt: skip
                backbone = emd.get("ModelParameters", {}).get("backbone")
                print(f"OK   {mt:<24} {time.time() - start:6.1f} s  {backbone}", flush=True)
            except Exception as exc:  # a failure is what this reports
                print(f"FAIL {mt:<24} {time.time() - start:6.1f} s  {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
