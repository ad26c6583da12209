"""Versus the peers users would pick: images/s of geotrain and of TorchGeo's trainers on the issue's three
workloads (UNET-ResNet34 256 px, FEATURE_CLASSIFIER-ResNet50 224 px, FASTERRCNN-ResNet50 512 px), the same
number of generated chips, batch size, fp32 on the CPU, no loader processes, random initialisation. Each figure
is the second epoch's training phase, validation timed apart. geotrain runs in this process (.venv); TorchGeo
in a subprocess of bench/.venv-peers's python running this file with --peer. arcgis.learn: see
docs/benchmarks.md (it installs, but its fit() cannot run on PyPI's fastai).

    bash bench/peers_setup.sh     # once
    .venv/bin/python bench/peers.py [unet] [feature_classifier] [fasterrcnn] [--chips N] [--batch B] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TORCHGEO_PYTHON = ROOT / "bench" / ".venv-peers" / "bin" / "python"
RESULT = "PEER-RESULT "
WORKLOADS = {"unet": (20, 4), "feature_classifier": (20, 4), "fasterrcnn": (10, 2)}
ARCGIS_NOT_MEASURED = (
    "arcgis 2.4.4's fit() calls fastai's fit_one_cycle(..., mixed_precision=...), which only Esri's own fastai "
    "1.0.63 build (Esri's conda channel) has; PyPI's last fastai v1 (1.0.61) raises TypeError"
)


def split(chips: int) -> tuple[int, int]:
    valid = max(1, round(chips * 0.1))
    return chips - valid, valid


def geotrain_speed(workload: str, chips: int, batch: int) -> float:
    sys.path.insert(0, str(ROOT))
    from bench.overhead import _geotrain
    from tests import formats
    from tests.exports import ExportSpec, write_classified_tiles

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if workload == "unet":
            spec = ExportSpec(chips=chips, size=256, bands=3, dtype="uint8", values=(1, 2), absent=None, compress=None)
            write_classified_tiles(root / "chips" / "unet", spec)
            return _geotrain(root, "unet", "UNET", "RESNET34", batch, {})
        if workload == "feature_classifier":
            formats.labeled_tiles(root / "chips" / "classifier", chips=chips)
            return _geotrain(root, "classifier", "FEATURE_CLASSIFIER", "RESNET50", batch, {"chip_size": "224"})
        formats.pascal_voc(root / "chips" / "voc", chips=chips, size=512)
        return _geotrain(root, "voc", "FASTERRCNN", "RESNET50", batch, {})


def torchgeo_speed(workload: str, chips: int, batch: int) -> dict[str, Any]:
    import lightning
    import torch
    import torchgeo
    from lightning.pytorch import Callback, LightningModule, Trainer
    from torch.utils.data import DataLoader
    from torchgeo.trainers import ClassificationTask, ObjectDetectionTask, SemanticSegmentationTask

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.epochs: list[tuple[int, float]] = []
            self._started = self._valid_started = self._valid = 0.0
            self._images = 0

        def on_train_epoch_start(self, trainer: Trainer, module: LightningModule) -> None:
            self._started, self._valid, self._images = time.perf_counter(), 0.0, 0

        def on_train_batch_end(self, trainer: Trainer, module: LightningModule, out: Any, b: Any, i: int) -> None:
            self._images += len(b["image"])

        def on_validation_epoch_start(self, trainer: Trainer, module: LightningModule) -> None:
            self._valid_started = time.perf_counter()

        def on_validation_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
            if not trainer.sanity_checking:
                self._valid += time.perf_counter() - self._valid_started

        def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
            self.epochs.append((self._images, time.perf_counter() - self._started - self._valid))

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    train, _ = split(chips)

    def image(size: int) -> torch.Tensor:
        return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator).float() / 255

    collate: Any = None
    task: LightningModule
    if workload == "unet":
        task = SemanticSegmentationTask(
            model="unet", backbone="resnet34", weights=None, in_channels=3, num_classes=3, loss="ce", lr=1e-4
        )
        samples = [
            {"image": image(256), "mask": torch.randint(0, 3, (256, 256), generator=generator)} for _ in range(chips)
        ]
    elif workload == "feature_classifier":
        task = ClassificationTask(model="resnet50", weights=None, in_channels=3, num_classes=3, loss="ce", lr=1e-4)
        samples = [{"image": image(224), "label": torch.tensor(i % 3)} for i in range(chips)]
    else:
        task = ObjectDetectionTask(
            model="faster-rcnn", backbone="resnet50", weights=None, in_channels=3, num_classes=3, lr=1e-4
        )
        samples = [
            {
                "image": image(512),
                "bbox_xyxy": torch.tensor([[2.0, 3.0, 12.5, 11.0], [30.0, 40.0 + i, 40.5, 48.0 + i]]),
                "label": torch.tensor([1, 2]),
            }
            for i in range(chips)
        ]

        def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
            return {
                "image": torch.stack([s["image"] for s in items]),
                "bbox_xyxy": [s["bbox_xyxy"] for s in items],
                "label": [s["label"] for s in items],
            }

    train_loader = DataLoader(
        samples[:train], batch_size=batch, shuffle=True, drop_last=train > batch, num_workers=0, collate_fn=collate
    )
    valid_loader = DataLoader(samples[train:], batch_size=batch, num_workers=0, collate_fn=collate)
    timer = EpochTimer()
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        callbacks=[timer],
    )
    trainer.fit(task, train_loader, valid_loader)
    images, seconds = timer.epochs[1]
    return {
        "framework": f"TorchGeo {torchgeo.__version__}",
        "images_per_second": images / seconds,
        "epochs": [{"images": i, "seconds": round(s, 3)} for i, s in timer.epochs],
        "versions": f"torch {torch.__version__}, lightning {lightning.__version__}",
        "threads": torch.get_num_threads(),
    }


def peer(python: Path, workload: str, chips: int, batch: int) -> dict[str, Any]:
    if not python.exists():
        return {"error": f"{python} is missing: run bash bench/peers_setup.sh"}
    command = [
        str(python),
        str(Path(__file__).resolve()),
        "--peer",
        "torchgeo",
        workload,
        "--chips",
        str(chips),
        "--batch",
        str(batch),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return dict(json.loads(line[len(RESULT) :]))
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
    return {"error": f"torchgeo run failed: {tail[0]}"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workloads", nargs="*", default=list(WORKLOADS))
    parser.add_argument("--chips", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--peer", choices=["torchgeo"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = sorted(set(args.workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}")
    if args.peer:
        (workload,) = args.workloads
        print(RESULT + json.dumps(torchgeo_speed(workload, args.chips, args.batch)), flush=True)
        return
    import torch

    print(f"device: CPU, {torch.get_num_threads()} threads; geotrain side: torch {torch.__version__}")
    print(f"command: .venv/bin/python bench/peers.py {' '.join(sys.argv[1:])}".rstrip())
    for workload in args.workloads:
        chips, batch = args.chips or WORKLOADS[workload][0], args.batch or WORKLOADS[workload][1]
        train, _ = split(chips)
        print(f"{workload}: {chips} chips ({train} training), batch {batch}", flush=True)
        ours: list[float] = []
        theirs: list[dict[str, Any]] = []
        for _ in range(args.rounds):
            ours.append(geotrain_speed(workload, chips, batch))
            theirs.append(peer(TORCHGEO_PYTHON, workload, chips, batch))
            if "error" in theirs[-1]:
                break
        best = max(ours)
        line = f"{workload}: geotrain {best:.2f} images/s"
        if "error" in theirs[-1]:
            print(f"{line}; TorchGeo: not measured — {theirs[-1]['error']}")
        else:
            top = max(theirs, key=lambda r: float(r["images_per_second"]))
            speed = float(top["images_per_second"])
            epochs = ", ".join(f"{e['images']} images in {e['seconds']} s" for e in top["epochs"])
            print(f"  {top['framework']} ({top['versions']}, {top['threads']} threads): epochs {epochs}")
            print(f"{line}; {top['framework']} {speed:.2f} images/s; ratio geotrain/TorchGeo {best / speed:.3f}")
        if args.rounds > 1:
            peers = ", ".join(f"{float(r['images_per_second']):.2f}" for r in theirs if "error" not in r)
            print(f"  rounds: geotrain {', '.join(f'{s:.2f}' for s in ours)}; TorchGeo {peers}")
        print(f"{workload}: arcgis.learn: not measured — {ARCGIS_NOT_MEASURED}", flush=True)


if __name__ == "__main__":
    main()
