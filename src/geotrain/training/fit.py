"""One training run on PyTorch Lightning: split, learning-rate finder, early stopping, checkpoints."""

from __future__ import annotations

import gc
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.tuner.tuning import Tuner
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, WeightedRandomSampler, default_collate
from torchmetrics.classification import MulticlassConfusionMatrix

from geotrain.dlpk.prf.geotrain_networks import pad_to_stride
from geotrain.errors import TrainingError
from geotrain.training import batch_size as batch_sizes
from geotrain.training import handback
from geotrain.training.distributed import Group, Placement
from geotrain.training.metrics import SegmentationMetrics, change_scores, from_confusion
from geotrain.training.models.pointrend import PointOutput, point_sample

log = logging.getLogger(__name__)

MONITOR_KEYS = {
    "VALID_LOSS": ("valid_loss", "min"),
    "ACCURACY": ("accuracy", "max"),
    "MIOU": ("miou", "max"),
    "AVERAGE_PRECISION": ("average_precision", "max"),
    "PRECISION": ("precision", "max"),
    "RECALL": ("recall", "max"),
    "F1_SCORE": ("f1_score", "max"),
    "DICE": ("dice", "max"),
    "CORPUS_BLEU": ("corpus_bleu", "max"),
}
LOSSES = ("train_loss", "valid_loss")
# every random choice a job makes (its network's start, its split of chips into steps) comes from this seed:
# the same job trains the same model on one process or several (bench/scaling.py)
SEED = 42


def freeze_except(module: nn.Module, learning: nn.Module | None = None) -> None:
    """Stop ``module`` learning except for ``learning`` (a head) and its BatchNorm layers, which keep
    learning, as fastai does when a body is frozen."""
    keep = {id(p) for p in learning.parameters()} if learning is not None else set()
    for part in module.modules():
        for p in part.parameters(recurse=False):
            p.requires_grad = id(p) in keep or isinstance(part, nn.modules.batchnorm._BatchNorm)


class OneCycleTask(pl.LightningModule):
    """A model with a learning rate ``lr`` (the finder sets it), trained with Adam on a one-cycle schedule."""

    lr: float
    network: nn.Module  # what the family trains (torch.compile wraps it when the job asks)
    # the validation metrics of the last validation epoch, in the family's own shape
    last_metrics: Any = None
    # largest gradient norm a step may take (None: no clipping)
    gradient_clip: float | None = None
    # convolutions over channels-last tensors: faster on the CPU (oneDNN) and on tensor-core GPUs
    channels_last: bool = False

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        first = batch[0] if isinstance(batch, list | tuple) else None
        if self.channels_last and isinstance(first, torch.Tensor) and first.dim() == 4:
            return (first.contiguous(memory_format=torch.channels_last), *batch[1:])
        return batch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a resumed run trains on at the rate this one chose (the finder is not run again)
        checkpoint["geotrain"] = {"lr": float(self.lr)}

    def configure_optimizers(self) -> Any:
        return self.one_cycle([p for p in self.parameters() if p.requires_grad])

    def one_cycle(self, params: list[nn.Parameter], betas: tuple[float, float] = (0.9, 0.999)) -> Any:
        """Adam over ``params`` on a one-cycle schedule up to the task's rate, as arcgis.learn's fit_one_cycle."""
        if self.trainer is not None and self.trainer.world_size > 1:
            # the rate rank 0's finder chose (the other ranks did not run it)
            self.lr = float(self.trainer.strategy.broadcast(self.lr, src=0))
        # one fused kernel for the whole update on a GPU instead of several per parameter tensor
        optimizer = torch.optim.Adam(params, lr=self.lr, betas=betas, fused=self.device.type == "cuda")
        steps = int(self.trainer.estimated_stepping_batches) if self.trainer is not None else 0
        if steps < 2 or not math.isfinite(steps):
            return optimizer
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr, total_steps=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@dataclass
class LossOptions:
    class_weights: torch.Tensor | None = None
    focal: bool = False
    dice_fraction: float = 0.0
    dice_average: str = "micro"
    ignore_index: list[int] = field(default_factory=list)
    mixup: bool = False


Out = TypeVar("Out")
# the label of pixels that are only padding
PADDING_LABEL = -100


@dataclass
class Outputs:
    """A pixel classifier's outputs cropped to the chip; ``padding`` (rows, columns) is what was added
    to the chip before the network saw it."""

    logits: torch.Tensor
    aux: torch.Tensor | None
    points: PointOutput | None
    padding: tuple[int, int]


# an auxiliary head's share of the training loss, as in PSPNet (and arcgis.learn's unet_aux_loss)
AUX_WEIGHT = 0.4


def mixup(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """fastai's MixUp (alpha 0.4), as arcgis.learn's ``mixup`` argument applies it: every training sample is
    blended with another of its batch; the caller blends the two targets' losses with the same share."""
    share = float(torch.distributions.Beta(0.4, 0.4).sample())
    share = max(share, 1 - share)  # the first sample stays the larger part, as in fastai
    partner = torch.randperm(len(x), device=x.device)
    return share * x + (1 - share) * x[partner], partner, share


def mixed_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    forward: Callable[[torch.Tensor], Out],
    loss: Callable[[Out, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """MixUp's training loss: the blended batch through ``forward``, scored against both blended targets
    in the blend's shares."""
    mixed, partner, share = mixup(x)
    out = forward(mixed)
    return share * loss(out, y) + (1 - share) * loss(out, y[partner])


class SegmentationTask(OneCycleTask):
    def __init__(
        self,
        network: nn.Module,
        encoder: nn.Module,
        num_classes: int,
        lr: float,
        loss: LossOptions,
        freeze: bool,
        change: bool = False,
    ) -> None:
        """``change``: the classes are kinds of change (index 0 none): precision, recall and F1 of finding
        change are logged too."""
        super().__init__()
        self.change = change
        self.last_change = (0.0, 0.0, 0.0)  # the last validation's change precision, recall and F1
        self.network = network
        self.encoder = encoder
        self.num_classes = num_classes
        self.lr = lr
        self.loss_options = loss
        weights = loss.class_weights.float() if loss.class_weights is not None else torch.ones(num_classes)
        for index in loss.ignore_index:
            weights[index] = 0.0
        self.register_buffer("class_weights", weights)
        self.confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.last_metrics: SegmentationMetrics | None = None
        self.channels_last = True
        if freeze:
            freeze_except(encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._outputs(x).logits

    def _outputs(self, x: torch.Tensor) -> Outputs:
        """The logits, and in training what else the network trains on: an auxiliary head's logits, a
        PointRend head's points."""
        rows, cols = x.shape[-2:]
        padded, pad_r, pad_c = pad_to_stride(x)
        out = self.network(padded)
        points = None
        if isinstance(out, PointOutput):
            points = out
            main, aux = out.logits, out.aux
        else:
            main, aux = out if isinstance(out, tuple) else (out, None)
        crop = (..., slice(0, rows), slice(0, cols))
        return Outputs(main[crop], aux[crop] if aux is not None else None, points, (pad_r, pad_c))

    def _training_loss(self, out: Outputs, target: torch.Tensor) -> torch.Tensor:
        loss = self._loss(out.logits, target)
        if out.aux is not None:
            loss = loss + AUX_WEIGHT * self._loss(out.aux, target)
        if out.points is not None:
            # the points lie on the padded chip: padding is no class
            padded = F.pad(target, (0, out.padding[1], 0, out.padding[0]), value=PADDING_LABEL)
            at_points = point_sample(padded[:, None].float(), out.points.coords, mode="nearest")[:, 0].long()
            loss = loss + self._pixel_loss(out.points.point_logits, at_points)
        return loss

    def _pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted cross-entropy (focal where asked) over pixels or points; ``PADDING_LABEL`` counts not."""
        weights: torch.Tensor = self.class_weights  # type: ignore[assignment]
        per_pixel = F.cross_entropy(logits.float(), target, reduction="none", ignore_index=PADDING_LABEL)
        w = weights[target.clamp(min=0)] * (target != PADDING_LABEL)
        if self.loss_options.focal:
            # focal loss (gamma 2): confident pixels count less
            per_pixel = (1 - torch.exp(-per_pixel)) ** 2 * per_pixel
        return (per_pixel * w).sum() / w.sum().clamp(min=1e-12)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        base = self._pixel_loss(logits, target)
        frac = self.loss_options.dice_fraction
        if frac > 0:
            weights: torch.Tensor = self.class_weights  # type: ignore[assignment]
            return (1 - frac) * base + frac * self._dice(logits, target, weights > 0)
        return base

    def _dice(self, logits: torch.Tensor, target: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=1)
        onehot = F.one_hot(target, self.num_classes).permute(0, 3, 1, 2).float()
        dims = (0, 2, 3)
        inter = (probs * onehot).sum(dims)[kept]
        card = (probs + onehot).sum(dims)[kept]
        if self.loss_options.dice_average == "macro":
            return 1 - (2 * inter / card.clamp(min=1e-6)).mean()
        return 1 - 2 * inter.sum() / card.sum().clamp(min=1e-6)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1].long()
        if self.loss_options.mixup and len(x) > 1:
            loss = mixed_loss(x, y, self._outputs, self._training_loss)
        else:
            loss = self._training_loss(self._outputs(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.confusion.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch[0], batch[1].long()
        logits = self(x)
        self.log("valid_loss", self._loss(logits, y), on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        pred = logits.argmax(dim=1)
        keep = torch.ones_like(y, dtype=torch.bool)
        for index in self.loss_options.ignore_index:
            keep &= y != index
        self.confusion.update(pred[keep], y[keep])

    def on_validation_epoch_end(self) -> None:
        matrix = self.confusion.compute().cpu()
        metrics = from_confusion(matrix)
        self.last_metrics = metrics
        self.log("accuracy", metrics.accuracy)
        self.log("miou", metrics.miou)
        if self.change:
            self.last_change = change_scores(matrix)
            for name, value in zip(("precision", "recall", "f1_score"), self.last_change, strict=True):
                self.log(name, value)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    valid_loss: float
    metrics: dict[str, float]
    seconds: float = float("nan")  # the whole epoch, validation included
    train_images_per_second: float = float("nan")  # the training phase alone
    valid_seconds: float = float("nan")


class Reporter(Callback):
    """After every epoch: a job message and the progress percentage, with the epoch's duration and the
    training phase's speed (validation timed apart, so the figure is what the optimizer steps cost)."""

    def __init__(self, max_epochs: int, report: Callable[[EpochRecord, int], None]) -> None:
        self.max_epochs = max_epochs
        self.report = report
        self.history: list[EpochRecord] = []
        self._started = self._valid_started = 0.0
        self._valid_seconds = 0.0
        self._images = 0
        self._stepped = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started, self._valid_seconds, self._images = time.perf_counter(), 0.0, 0

    # a run resumed within an epoch starts there without an epoch start: its figures cover the rest of it
    on_train_start = on_train_epoch_start

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[0]) * trainer.world_size  # every rank steps through as many
        if not self._stepped:
            # in train.log, where bench/first_step.py reads how long a job took to its first optimizer step
            log.info("first training step done")
            self._stepped = True

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._valid_started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._valid_seconds += time.perf_counter() - self._valid_started

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        seconds = time.perf_counter() - self._started
        training = max(seconds - self._valid_seconds, 1e-9)
        record = EpochRecord(
            trainer.current_epoch + 1,
            m.get("train_loss", float("nan")),
            m.get("valid_loss", float("nan")),
            {k: v for k, v in m.items() if k not in LOSSES},
            seconds,
            self._images / training if self._images else float("nan"),
            self._valid_seconds,
        )
        self.history.append(record)
        self.report(record, self.max_epochs)

    # the epochs before a crash are part of a resumed run's history (its loss graph, its best epoch)
    def state_dict(self) -> dict[str, Any]:
        return {"history": [asdict(r) for r in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [EpochRecord(**r) for r in state_dict.get("history", [])]


class HandBack(Callback):
    """When the worker asks for the job back: a checkpoint of this very step (optimizer, schedule, where in
    the epoch), then exit. The next attempt goes on from it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        handback.fitting.set()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        handback.finishing.set()
        handback.fitting.clear()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # only rank 0 is asked; every rank must save (a collective) and stop at the same step
        asked = handback.requested.is_set()
        if trainer.world_size > 1:
            asked = trainer.strategy.reduce_boolean_decision(asked, all=False)
        if asked:
            partial = self.path.with_suffix(".partial")
            trainer.save_checkpoint(partial)  # written by rank 0
            if trainer.is_global_zero:
                partial.replace(self.path)  # a kill while saving leaves the previous checkpoint whole
            handback.fitting.clear()
            raise SystemExit(handback.HANDED_BACK)


@dataclass
class FitOptions:
    max_epochs: int
    batch_size: int
    lr: float | None
    monitor: str
    stop_training: bool
    use_gpu: bool
    workdir: Path
    num_workers: int = 0
    # torch.compile the task's network with this backend before training (None: run it eagerly)
    compile: str | None = None
    group: Group = field(default_factory=lambda: Group(Placement("cpu")))


@dataclass
class FitResult:
    lr: float
    lr_found: bool
    history: list[EpochRecord]
    best_epoch: int | None
    best_score: float | None
    metrics: Any  # the task's last_metrics after validating the kept weights
    stopped_early: bool
    batch_size: int  # the one trained with (halved from the request after running out of GPU memory)


def fit(
    task: OneCycleTask,
    train_set: torch.utils.data.Dataset[Any],
    valid_set: torch.utils.data.Dataset[Any],
    options: FitOptions,
    report_epoch: Callable[[EpochRecord, int], None],
    info: Callable[[str], None],
    warn: Callable[[str], None],
    collate_fn: Callable[[list[Any]], Any] | None = None,
    sample_weights: Sequence[float] | None = None,
) -> FitResult:
    """Train ``task``; out of GPU memory, train again with half the batch size (as ArcGIS retries), down to
    one chip a batch. ``sample_weights``: draw training samples with these relative chances (with
    replacement) instead of shuffling each once per epoch."""
    batch_size = options.batch_size
    if options.use_gpu and options.group.world == 1:
        mixed = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision(True))
        batch_size = batch_sizes.on_gpu(task, train_set, collate_fn or default_collate, mixed, batch_size, info)
    while True:
        try:
            return _fit_once(
                task, train_set, valid_set, replace(options, batch_size=batch_size), report_epoch, info, warn,
                collate_fn, sample_weights,
            )  # fmt: skip
        except torch.cuda.OutOfMemoryError:
            handback.fitting.clear()
            if options.group.world > 1:
                # the other processes wait in a collective for this one: no training again alone
                raise TrainingError(
                    f"Out of GPU memory with batch size {batch_size} on each of {options.group.world} GPUs.",
                    ["Give a smaller batch_size (it is per GPU), a smaller chip_size, or a smaller backbone."],
                ) from None
            if batch_size <= 1:
                raise TrainingError(
                    "Out of GPU memory even with one chip a batch.",
                    ["Use a smaller chip_size or resize_to, a smaller backbone, or a GPU with more memory."],
                ) from None
            smaller = batch_size // 2
            warn(f"Out of GPU memory with batch size {batch_size}: training again with batch size {smaller}.")
            # the larger batch's checkpoints hold a schedule of other length: they do not carry over
            shutil.rmtree(options.workdir / "checkpoints", ignore_errors=True)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch_size = smaller


def _fit_once(
    task: OneCycleTask,
    train_set: torch.utils.data.Dataset[Any],
    valid_set: torch.utils.data.Dataset[Any],
    options: FitOptions,
    report_epoch: Callable[[EpochRecord, int], None],
    info: Callable[[str], None],
    warn: Callable[[str], None],
    collate_fn: Callable[[list[Any]], Any] | None = None,
    sample_weights: Sequence[float] | None = None,
) -> FitResult:
    """``sample_weights``: draw training samples with these relative chances (with replacement) instead of
    shuffling each once per epoch."""
    pl.seed_everything(SEED, workers=True, verbose=False)
    group = options.group
    n_train = len(train_set)  # type: ignore[arg-type]
    sampler: Sampler[int]
    if sample_weights is not None:
        sampler = WeightedRandomSampler(list(sample_weights), n_train)  # Lightning shares it out under DDP
    else:
        # the same order of chips on any number of processes: step k of N processes with batch B sees the
        # chips of step k of one process with batch N x B (this sampler's permutation, dealt in turn)
        sampler = DistributedSampler(train_set, num_replicas=group.world, rank=group.rank, shuffle=True, seed=SEED)
    per_process = math.ceil(n_train / group.world)
    train_loader = DataLoader(
        train_set, batch_size=options.batch_size, sampler=sampler, drop_last=per_process > options.batch_size,
        num_workers=options.num_workers, persistent_workers=options.num_workers > 0, pin_memory=options.use_gpu,
        collate_fn=collate_fn,
    )  # fmt: skip
    valid_loader = DataLoader(
        valid_set,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        pin_memory=options.use_gpu,
        collate_fn=collate_fn,
    )
    monitor_key, mode = MONITOR_KEYS[options.monitor]
    folder = options.workdir / "checkpoints"
    last = folder / "last.ckpt"  # every epoch's whole state, and the hand-back's
    # after the Reporter's epoch end (checkpoint callbacks run last): the saved history holds the epoch.
    # The best epoch's weights alone (all the end reads back); the whole state (optimizer, schedule, callbacks,
    # the best one's score among them) only in last.ckpt, which a resumed run starts from: a third of the bytes
    # the epoch would write with the optimizer's state in both
    checkpoint = ModelCheckpoint(
        dirpath=folder, filename="best", monitor=monitor_key, mode=mode, save_top_k=1, save_weights_only=True,
        save_on_train_epoch_end=True,
    )  # fmt: skip
    latest = ModelCheckpoint(
        dirpath=folder, filename=last.stem, save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True
    )
    resume = _resumable(last, warn)
    reporter = Reporter(options.max_epochs, report_epoch)
    callbacks: list[Callback] = [checkpoint, latest, reporter, HandBack(last)]
    stopper: EarlyStopping | None = None
    if options.stop_training:
        # arcgis.learn: stop when the monitored metric has not improved by 0.001 for 5 epochs
        stopper = EarlyStopping(monitor=monitor_key, mode=mode, min_delta=0.001, patience=5)
        callbacks.append(stopper)
    common: dict[str, Any] = dict(
        accelerator="gpu" if options.use_gpu else "cpu",
        devices=[group.device] if options.use_gpu else 1,
        precision=precision(options.use_gpu),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=task.gradient_clip,
        default_root_dir=options.workdir,
        log_every_n_steps=1,
    )
    lr_found = options.lr is None
    if resume is not None:
        task.lr, done, within = resume
        where = (
            f"taken during epoch {done + 1}: training goes on in epoch {done + 1}"
            if within
            else f"of epoch {done}: training goes on at epoch {done + 1}"
        )
        info(
            f"Resuming from the checkpoint {where} of {options.max_epochs}, the optimizer, learning-rate schedule "
            "and early stopping as they were."
        )
    elif options.lr is None and group.leader:
        # its own single-process trainer: the finder's steps must not be capped by max_epochs on a small data
        # set, and Lightning's finder does not run under DDP; the other ranks take its rate when training starts
        finder = pl.Trainer(max_epochs=10_000, **common)
        task.lr = find_lr(finder, task, train_loader, valid_loader, warn)
        info(f"The learning-rate finder chose {task.lr:.4e}.")
    elif options.lr is not None:
        task.lr = options.lr
    if task.channels_last:
        task.to(memory_format=torch.channels_last)
    eager: nn.Module | None = None
    if options.compile is not None:
        # compiled at its first step (a minute or more on a CPU); checkpoints hold the compiled module's names,
        # and a resumed run compiles again, so they load back
        eager = task.network
        task.network = torch.compile(eager, backend=options.compile)  # type: ignore[assignment]  # an OptimizedModule, typed loosely
    info(engine_text(options, common["precision"], task.channels_last))
    if group.world > 1:
        common.update(
            devices=list(group.plan.devices) if options.use_gpu else group.world,
            strategy=DDPStrategy(process_group_backend=group.plan.backend),
            # batch statistics over every process's chips, as one process with the whole batch has them (torch
            # has no SyncBatchNorm on the CPU: there each process normalises by its own chips)
            sync_batchnorm=options.use_gpu,
        )
    trainer = pl.Trainer(max_epochs=options.max_epochs, callbacks=callbacks, **common)
    trainer.fit(task, train_loader, valid_loader, ckpt_path=last if resume is not None else None)
    best_path = checkpoint.best_model_path
    best_epoch = None
    if best_path and Path(best_path).is_file():
        state = torch.load(best_path, map_location="cpu", weights_only=True)
        task.load_state_dict(state["state_dict"])
        best_epoch = int(state.get("epoch", -1)) + 1
    # the last epoch's validation scored these very weights when they are the last epoch's (one process: under
    # DDP every rank must take part in the same validation, and they would have to agree to skip it)
    if not (best_epoch == len(reporter.history) and group.world == 1 and task.last_metrics is not None):
        trainer.validate(task, valid_loader, verbose=False)
    assert task.last_metrics is not None
    if eager is not None:
        task.network = eager  # the same weights, run eagerly from here on (pictures, the package's check)
    # the package holds plain (contiguous) weights, as every reader expects
    task.to(memory_format=torch.contiguous_format)
    score = checkpoint.best_model_score
    return FitResult(
        lr=task.lr,
        lr_found=lr_found,
        history=reporter.history,
        best_epoch=best_epoch,
        best_score=float(score) if score is not None else None,
        metrics=task.last_metrics,
        stopped_early=stopper is not None and stopper.stopped_epoch > 0,
        batch_size=options.batch_size,
    )


def _resumable(last: Path, warn: Callable[[str], None]) -> tuple[float, int, bool] | None:
    """(learning rate, epochs done, whether it was taken within the next epoch) of an earlier attempt's last
    checkpoint of this job, or None when there is none (or it cannot be read: the job then starts over, and
    says so)."""
    if not last.is_file():
        return None
    try:
        # the job's own file, written by geotrain in the job folder: still, tensors and plain values only
        saved = torch.load(last, map_location="cpu", weights_only=True)
        histories = [v["history"] for k, v in saved.get("callbacks", {}).items() if k.startswith("Reporter")]
        done = len(histories[0]) if histories else int(saved["epoch"]) + 1
        return float(saved["geotrain"]["lr"]), done, int(saved["epoch"]) == done
    except Exception as exc:  # a checkpoint cut short by the crash it is meant to survive
        warn(f"The checkpoint of an earlier attempt cannot be read ({type(exc).__name__}); training starts over.")
        last.unlink(missing_ok=True)
        return None


def engine_text(options: FitOptions, precision: str, channels_last: bool) -> str:
    """The engine's choices as the job's message names them."""
    group = options.group
    parts = [group.plan.describe(), f"{precision} precision"]
    if group.world > 1:
        parts.append(f"batch size {options.batch_size} per process ({options.batch_size * group.world} a step)")
    else:
        parts.append(f"batch size {options.batch_size}")
    parts.append(f"{options.num_workers} data-loader worker(s){', pinned memory' if options.use_gpu else ''}")
    if channels_last:
        parts.append("channels-last memory format")
    if options.compile is not None:
        parts.append("torch.compile")
    if options.use_gpu:
        parts.append("fused Adam")
    threads = f"{torch.get_num_threads()} CPU thread(s)" + (" per process" if group.world > 1 else "")
    return f"Engine: {', '.join(parts)}, {threads}."


def precision(use_gpu: bool) -> str:
    """Mixed precision on a GPU: bfloat16 where the GPU has it (no loss scaling needed), float16 with loss
    scaling elsewhere; full precision on the CPU, where autocast gains nothing for these networks."""
    if not use_gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def find_lr(
    trainer: pl.Trainer,
    task: OneCycleTask,
    train_loader: DataLoader[Any],
    valid_loader: DataLoader[Any],
    note: Callable[[str], None],
) -> float:
    steps = min(100, max(30, 3 * len(train_loader)))
    result = Tuner(trainer).lr_find(
        task, train_dataloaders=train_loader, val_dataloaders=valid_loader, min_lr=1e-6, max_lr=1.0,
        num_training=steps, update_attr=False, early_stop_threshold=None,
    )  # fmt: skip
    suggestion = result.suggestion() if result is not None else None
    if suggestion is None or not math.isfinite(suggestion) or suggestion <= 0:
        note("The learning-rate finder found no clear rate; using 1.0e-03.")
        return 1e-3
    return float(suggestion)
