"""GPU efficiency: images/s and achieved TFLOP/s of a hand-written training loop in each configuration the issue
names — bf16 autocast, channels-last, fused Adam, ``torch.compile``, loader workers — against the GPU's peak,
and geotrain's own training run with its defaults on the same workload, so that geotrain's defaults can be
held to the loop's best configuration (goal: within 15 %).

FLOPs of a step are counted once with ``torch.utils.flop_counter`` (forward and backward); TFLOP/s is that
count times steps per second. Peaks are the vendors' dense bf16 tensor-core figures for the GPUs named below.

    .venv/bin/python bench/gpu_efficiency.py [--model resnet50|unet] [--batch 64] [--size 224] [--steps 30]

It runs on the CPU too (``--cpu``, small sizes) to check the script itself; figures are meant for a GPU.
Published anchor: ResNet-50 training ≈ 2,470 images/s with AMP on one A100 (NVIDIA's reference).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets)
PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def _network(model: str, classes: int) -> torch.nn.Module:
    from geotrain.training.classification import build_classifier
    from geotrain.training.models.registry import build

    if model == "unet":
        return build("UNET", "RESNET34", 3, classes, "", {}).network
    return build_classifier("RESNET50", 3, classes, "").network


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(out.float(), y)


def _data(model: str, n: int, size: int, classes: int) -> TensorDataset:
    x = torch.rand(n, 3, size, size)
    y = torch.randint(0, classes, (n, size, size) if model == "unet" else (n,))
    return TensorDataset(x, y)


def _flops(network: torch.nn.Module, model: str, x: torch.Tensor, y: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        _loss(network(x), y).backward()
    network.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def _batches(loader: DataLoader[tuple[torch.Tensor, ...]]) -> Iterator[tuple[torch.Tensor, ...]]:
    while True:
        yield from loader


def loop(args: argparse.Namespace, bf16: bool, channels_last: bool, fused: bool, compiled: bool, workers: int) -> float:
    """Images/s of the loop's timed steps (after ``--warmup`` steps, which include compiling)."""
    device = torch.device("cpu" if args.cpu else "cuda")
    torch.manual_seed(0)
    network = _network(args.model, 3).to(device).train()
    memory = torch.channels_last if channels_last else torch.contiguous_format
    network = network.to(memory_format=memory)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4, fused=fused and device.type == "cuda")
    step_model = torch.compile(network) if compiled else network
    data = _data(args.model, args.batch * 4, args.size, 3)
    loader = DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)  # fmt: skip
    batches = _batches(loader)
    dtype = torch.bfloat16 if bf16 else torch.float32
    started = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        x, y = next(batches)
        x = x.to(device, non_blocking=True).contiguous(memory_format=memory)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=bf16):
            loss = _loss(step_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - started)


def geotrain(args: argparse.Namespace) -> float:
    """geotrain's training run with its defaults (on the GPU when there is one) on a generated export of the
    same size: images/s of its second epoch's training phase, as its epoch message reports it."""
    from bench.overhead import _geotrain
    from tests import formats
    from tests.exports import ExportSpec, write_classified_tiles

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        chips = args.batch * (args.steps // 2 + 2)
        if args.model == "unet":
            spec = ExportSpec(chips=chips, size=args.size, bands=3, dtype="uint8", values=(1, 2), absent=None)
            write_classified_tiles(root / "chips" / "g", spec)
            return _geotrain(root, "g", "UNET", "RESNET34", args.batch, {})
        formats.labeled_tiles(root / "chips" / "g", chips=chips)
        return _geotrain(root, "g", "FEATURE_CLASSIFIER", "RESNET50", args.batch, {"chip_size": str(args.size)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("resnet50", "unet"), default="resnet50")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--cpu", action="store_true", help="check the script on the CPU (figures are for GPUs)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it takes minutes)")
    args = parser.parse_args()
    print(f"command: .venv/bin/python bench/gpu_efficiency.py {' '.join(sys.argv[1:])}".rstrip())
    if args.cpu:
        name, peak = "CPU", None
    else:
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAKS.items() if k in name), None)
    print(f"device: {name}; torch {torch.__version__}; peak bf16 {peak or 'unknown'} TFLOP/s")
    device = torch.device("cpu" if args.cpu else "cuda")
    network = _network(args.model, 3).to(device)
    sample = _data(args.model, args.batch, args.size, 3).tensors
    flops = _flops(network, args.model, sample[0].to(device), sample[1].to(device)) / args.batch
    print(f"{args.model} {args.size} px: {flops / 1e9:.1f} GFLOP a training image (forward + backward)")
    results = {}
    for bf16, channels_last, fused, compiled, workers in itertools.product(
        (False, True), (False, True), (False, True), (False,) if args.no_compile else (False, True), (0, args.workers)
    ):
        if args.cpu and (fused or workers):
            continue  # no fused Adam on the CPU; workers only feed a GPU
        speed = loop(args, bf16, channels_last, fused, compiled, workers)
        key = f"bf16={bf16} channels_last={channels_last} fused={fused} compile={compiled} workers={workers}"
        results[key] = speed
        achieved = speed * flops / 1e12
        share = f", {achieved / peak:.1%} of peak" if peak else ""
        print(f"  loop {key}: {speed:.1f} images/s, {achieved:.2f} TFLOP/s{share}")
    best = max(results, key=lambda k: results[k])
    print(f"loop's best: {best}: {results[best]:.1f} images/s")
    ours = geotrain(args)
    print(f"geotrain (its defaults): {ours:.1f} images/s, {ours / results[best]:.3f} of the loop's best")


if __name__ == "__main__":
    main()
