"""Framework overhead: images/s of a geotrain training epoch against a minimal hand-written PyTorch loop over
the same network (built by geotrain's own builders, so the architecture is identical), the same chips held
in memory, the same batch size, precision (fp32 on the CPU, the default there) and loader settings (no
worker processes: geotrain holds chips in memory and reads them in the training process).

geotrain's figure is the training phase of its second epoch as its own epoch message reports it (validation
timed apart); the loop's is its second pass over the same chips, once with contiguous tensors and once
channels-last; geotrain is compared with the faster of the two (the loop's best configuration). All in one
run, one after the other.

    .venv/bin/python bench/overhead.py [unet] [feature_classifier] [fasterrcnn] [--chips N] [--batch B]

Workloads (the issue's): UNET-ResNet34 on 256 px chips, FEATURE_CLASSIFIER-ResNet50 on 224 px,
FASTERRCNN-ResNet50 on 512 px. Chips are generated (3 bands, uint8).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geotrain.config import Settings
from geotrain.task.params import parse
from geotrain.training.run import Progress, train
from tests import formats
from tests.exports import ExportSpec, write_classified_tiles

SPEED = re.compile(r"training ([0-9.]+) images/s")


def _geotrain(root: Path, folder: str, model_type: str, backbone: str, batch: int, extra: dict[str, str]) -> float:
    settings = Settings(home=root / "home", data_stores={"/fileShares/b": root / "chips"}, check_packages=False)
    form = {"in_folder": f"/fileShares/b/{folder}", "output_name": json.dumps({"uri": f"/fileShares/b/out/{folder}"}),
            "model_type": model_type, "backbone_model": backbone, "max_epochs": "2", "learning_rate": "0.0001",
            "batch_size": str(batch), "data_augmentation": "NONE", "validation_percent": "10",
            "stop_training": "false", **extra}  # fmt: skip
    messages: list[str] = []
    train(parse(form), settings, root / "work" / folder, Progress(messages.append, messages.append, lambda p, t: None))
    epochs = [m for m in messages if m.startswith("Epoch 2/2")]
    engine = next(m for m in messages if m.startswith("Engine:"))
    print(f"  geotrain: {engine}")
    found = SPEED.search(epochs[0])
    assert found is not None, epochs
    return float(found.group(1))


def _loop(
    batches: list[Any], step: Callable[[Any], torch.Tensor], network: torch.nn.Module, images: int
) -> dict[str, float]:
    """The hand-written loop in each memory format: its images/s, contiguous and channels-last."""
    speeds = {}
    for name, memory_format in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        network.to(memory_format=memory_format)
        shaped = [(_shaped(b[0], memory_format), b[1]) for b in batches]
        speeds[name] = _passes(shaped, step, network.parameters(), images)
    return speeds


def _shaped(x: Any, memory_format: torch.memory_format) -> Any:
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=memory_format)
    return x


def _passes(batches: list[Any], step: Callable[[Any], torch.Tensor], parameters: Any, images: int) -> float:
    """Two passes of a plain loop (AdamW, one-cycle schedule, zero_grad/backward/step); the second is timed."""
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-4, total_steps=2 * len(batches))
    seconds = 0.0
    for _pass in range(2):
        started = time.perf_counter()
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = step(batch)
            loss.backward()
            optimizer.step()
            schedule.step()
        seconds = time.perf_counter() - started
    return images / seconds


def unet(root: Path, chips: int, batch: int) -> tuple[float, dict[str, float]]:
    from geotrain.training.models.registry import build

    write_classified_tiles(root / "chips" / "unet", ExportSpec(chips=chips, size=256, bands=3, dtype="uint8",
                                                               values=(1, 2), absent=None, compress=None))  # fmt: skip
    ours = _geotrain(root, "unet", "UNET", "RESNET34", batch, {})
    torch.manual_seed(0)
    network = build("UNET", "RESNET34", 3, 3, "").network.train()
    n = chips - max(1, round(chips * 0.1))
    x, y = torch.rand(n, 3, 256, 256), torch.randint(0, 3, (n, 256, 256))
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, n - batch + 1, batch)]
    loss = torch.nn.CrossEntropyLoss()
    theirs = _loop(batches, lambda b: loss(network(b[0]), b[1]), network, len(batches) * batch)
    return ours, theirs


def feature_classifier(root: Path, chips: int, batch: int) -> tuple[float, dict[str, float]]:
    from geotrain.training.classification import build_classifier

    folder = root / "chips" / "classifier"
    formats.labeled_tiles(folder, chips=chips)
    ours = _geotrain(root, "classifier", "FEATURE_CLASSIFIER", "RESNET50", batch, {"chip_size": "224"})
    torch.manual_seed(0)
    network = build_classifier("RESNET50", 3, 3, "").network.train()
    n = chips - max(1, round(chips * 0.1))
    x, y = torch.rand(n, 3, 224, 224), torch.randint(0, 3, (n,))
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, n - batch + 1, batch)]
    loss = torch.nn.CrossEntropyLoss()
    theirs = _loop(batches, lambda b: loss(network(b[0]), b[1]), network, len(batches) * batch)
    return ours, theirs


def fasterrcnn(root: Path, chips: int, batch: int) -> tuple[float, dict[str, float]]:
    from geotrain.training.models.detectors import build_detector

    formats.pascal_voc(root / "chips" / "voc", chips=chips, size=512)
    ours = _geotrain(root, "voc", "FASTERRCNN", "RESNET50", batch, {})
    torch.manual_seed(0)
    network = build_detector("FASTERRCNN", "RESNET50", 3, 3, "", 512, False, {}).network.train()
    n = chips - max(1, round(chips * 0.1))
    boxes = torch.tensor([[2.0, 3.0, 12.5, 11.0], [30.0, 40.0, 40.5, 48.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2])} for _ in range(n)]
    images = [torch.rand(3, 512, 512) for _ in range(n)]
    batches = [(images[i : i + batch], targets[i : i + batch]) for i in range(0, n - batch + 1, batch)]

    def step(b: Any) -> torch.Tensor:
        losses: dict[str, torch.Tensor] = network(b[0], b[1])
        return sum(losses.values(), torch.zeros(()))

    theirs = _loop(batches, step, network, len(batches) * batch)
    return ours, theirs


WORKLOADS = {
    "unet": (unet, 20, 4),
    "feature_classifier": (feature_classifier, 20, 4),
    "fasterrcnn": (fasterrcnn, 10, 2),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workloads", nargs="*", default=list(WORKLOADS))
    parser.add_argument("--chips", type=int, help="chips per workload (default: 20, FASTERRCNN 10)")
    parser.add_argument("--batch", type=int, help="batch size (default: 4, FASTERRCNN 2)")
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device}; torch {torch.__version__}")
    print(f"command: .venv/bin/python bench/overhead.py {' '.join(sys.argv[1:])}".rstrip())
    for name in args.workloads:
        run, chips, batch = WORKLOADS[name]
        with tempfile.TemporaryDirectory() as tmp:
            ours, theirs = run(Path(tmp), args.chips or chips, args.batch or batch)
        best = max(theirs, key=lambda k: theirs[k])
        loops = ", ".join(f"{k} {v:.2f}" for k, v in theirs.items())
        print(f"{name}: geotrain {ours:.2f} images/s; hand-written loop {loops} images/s; ratio to the loop's best "
              f"({best}) {ours / theirs[best]:.3f}")  # fmt: skip


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
