"""Write a .dlpk (a zip with entries relative to the model folder) and open one back safely."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from geotrain.dlpk import inference
from geotrain.dlpk.archive import PackageError, read_emd, safe_members

LOSS_GRAPH = "ModelCharacteristics/loss_graph.png"
SHOW_RESULTS = "ModelCharacteristics/show_results.png"
METRICS_HTML = "model_metrics.html"


@dataclass
class PackageContents:
    name: str
    emd: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    loss_graph: bytes
    show_results: bytes
    report_rows: list[tuple[str, str]]
    per_class: dict[str, dict[str, float]]


def metrics_html(contents: PackageContents) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in contents.report_rows)
    header = "<tr><th>Class</th><th>Precision</th><th>Recall</th><th>F1</th></tr>"
    per_class = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{m['precision']:.4f}</td><td>{m['recall']:.4f}</td><td>{m['f1']:.4f}</td></tr>"
        for name, m in contents.per_class.items()
    )
    loss = base64.b64encode(contents.loss_graph).decode()
    results = base64.b64encode(contents.show_results).decode()
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(contents.name)}</title></head><body>"
        f"<h2>{html.escape(contents.name)}</h2><table>{rows}</table>"
        f"<h3>Per class metrics</h3><table>{header}{per_class}</table>"
        f"<h3>Training and Validation loss</h3><img src='data:image/png;base64,{loss}'>"
        f"<h3>Sample Results</h3><img src='data:image/png;base64,{results}'></body></html>"
    )


def write(contents: PackageContents, target: Path) -> None:
    """Write the package to ``target`` atomically: readers never see a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    weights = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in contents.state_dict.items()}, weights)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{contents.name}.emd", json.dumps(contents.emd, indent=4))
            # stored, not deflated: float weights shrink by a few percent at seconds per 100 MB
            zf.writestr(f"{contents.name}.pth", weights.getvalue(), compress_type=zipfile.ZIP_STORED)
            zf.writestr(LOSS_GRAPH, contents.loss_graph)
            zf.writestr(SHOW_RESULTS, contents.show_results)
            zf.writestr(METRICS_HTML, metrics_html(contents))
            for name, data in inference.files_for(
                str(contents.emd.get("ModelType", "")), str(contents.emd.get("ModelName", ""))
            ).items():
                zf.writestr(name, data)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights named by the EMD's ModelFile, loaded without running any code from the file."""
    _, emd = read_emd(path)
    model_file = str(emd.get("ModelFile", ""))
    with zipfile.ZipFile(path) as zf:
        names = {m.filename for m in safe_members(zf)}
        if model_file not in names:
            raise PackageError(f"the EMD's ModelFile '{model_file}' is not in the package")
        state = torch.load(io.BytesIO(zf.read(model_file)), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise PackageError("the weights are not a state dict")
    return state
