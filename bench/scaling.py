"""Scaling: the same job on 1 and on 2 training processes (DistributedDataParallel; gloo on the CPU, NCCL on
GPUs), through a real server and worker, as a client would submit it.

Three runs of one UNET-ResNet18 job (generated 3-band uint8 chips, fixed learning rate, no augmentation):
  A  1 process,  batch size 2B           (the reference)
  B  2 processes, batch size B each      (the same 2B chips a step as A: its results should equal A's)
  C  2 processes, batch size 2B each     (each process as busy as A's one)
Speed is the mean training images/s of the epochs after the first, from the jobs' epoch messages; results are
each epoch's train loss and the final validation loss and accuracy.

    .venv/bin/python bench/scaling.py [--chips 96] [--size 128] [--batch 4] [--epochs 3] [--gpus]

``--gpus`` asks for GPU processes (context gpus) instead of CPU ones (context processes).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import TASK, Server, arcgis_form, in_share, wait_for
from tests.exports import ExportSpec, write_classified_tiles

EPOCH = re.compile(
    r"^Epoch (\d+)/\d+: train_loss ([0-9.]+), valid_loss ([0-9.]+), accuracy ([0-9.]+).*training ([0-9.]+) images/s"
)


def run(
    client: httpx.Client, server: Server, name: str, args: argparse.Namespace, processes: int, batch: int
) -> dict[str, Any]:
    context: dict[str, object] = {"gpus": processes} if args.gpus else {"processes": processes, "processorType": "CPU"}
    form = arcgis_form(
        in_folder="/fileShares/chips/bench", output_name=in_share(name), model_type="UNET", backbone_model="RESNET18",
        batch_size=batch, max_epochs=args.epochs, learning_rate=0.001, data_augmentation="NONE", stop_training=False,
        context=context,
    )  # fmt: skip
    started = time.monotonic()
    job_id = client.post(server.url + TASK + "/submitJob", data=form).json()["jobId"]
    job = wait_for(client, f"{server.url}{TASK}/jobs/{job_id}", timeout=3600)
    wall = time.monotonic() - started
    texts = [m["description"] for m in job["messages"]]
    assert job["jobStatus"] == "esriJobSucceeded", texts
    epochs = [m.groups() for t in texts if (m := EPOCH.match(t))]
    engine = next(t for t in texts if t.startswith("Engine:"))
    later = [float(e[4]) for e in epochs[1:]] or [float(epochs[0][4])]
    return {
        "engine": engine,
        "train_loss": [float(e[1]) for e in epochs],
        "valid_loss": float(epochs[-1][2]),
        "accuracy": float(epochs[-1][3]),
        "speed": sum(later) / len(later),
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chips", type=int, default=96)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--gpus", action="store_true")
    args = parser.parse_args()
    shown = " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "gpus") + (" --gpus" if args.gpus else "")
    print(f"command: .venv/bin/python bench/scaling.py {shown}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = ExportSpec(chips=args.chips, size=args.size, bands=3, dtype="uint8", values=(1, 2), absent=None)
        write_classified_tiles(root / "chips" / "bench", spec)
        server = Server(home=root / "home", stores={"/fileShares/chips": str(root / "chips")},
                        extra_env={"GEOTRAIN_CHECK_PACKAGES": "false"}).start()  # fmt: skip
        try:
            with httpx.Client(timeout=30) as client:
                runs = {
                    "A": run(client, server, "a", args, 1, 2 * args.batch),
                    "B": run(client, server, "b", args, 2, args.batch),
                    "C": run(client, server, "c", args, 2, 2 * args.batch),
                }
        finally:
            server.stop()
    for key, r in runs.items():
        losses = ", ".join(f"{v:.4f}" for v in r["train_loss"])
        print(f"{key}: {r['engine']}")
        print(f"   train_loss by epoch {losses}; final valid_loss {r['valid_loss']:.4f}, accuracy {r['accuracy']:.4f}; "
              f"{r['speed']:.1f} training images/s; job {r['wall']:.1f} s")  # fmt: skip
    a, b, c = runs["A"], runs["B"], runs["C"]
    differences = [abs(x - y) / max(abs(x), 1e-9) for x, y in zip(a["train_loss"], b["train_loss"], strict=True)]
    print(
        f"results, B against A: train loss within {max(differences):.1%} every epoch; valid_loss "
        f"{b['valid_loss']:.4f} vs {a['valid_loss']:.4f}; accuracy {b['accuracy']:.4f} vs {a['accuracy']:.4f}"
    )
    print(f"speed-up on 2 processes: B/A {b['speed'] / a['speed']:.2f}x, C/A {c['speed'] / a['speed']:.2f}x")


if __name__ == "__main__":
    main()
