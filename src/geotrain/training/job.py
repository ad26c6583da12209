"""What every model family's training run shares: progress, the checked scan, the device, the split,
epoch reports and writing the package."""

from __future__ import annotations

import colorsys
import errno
import pickle
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from geotrain.config import Settings
from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk import package, pictures, verify
from geotrain.dlpk.archive import PackageError
from geotrain.errors import TrainingError
from geotrain.task.augmentation import Augmentation, Plan
from geotrain.task.params import TrainParams
from geotrain.task.pretrained import Pretrained
from geotrain.training.data.augment import Augmenter
from geotrain.training.data.export import ClassInfo, ExportInfo
from geotrain.training.data.readers import Reader, reader_for
from geotrain.training.data.scan import Normalization, Scan, bad_chip_verdict, scan, split
from geotrain.training.distributed import Group, Placement
from geotrain.training.fit import MONITOR_KEYS, EpochRecord, FitOptions, FitResult, OneCycleTask, fit

T = TypeVar("T")

# share of the progress bar spent before and after the epochs
PREPARE, PACKAGE = 5.0, 95.0
# the least share of a chip on which a package's inference function must agree with the trained model
AGREEMENT = 0.99
# detection packages: the least confidence the check asks for (low, to compare many detections), and the
# least share of detections that must be alike (a GPU and a CPU may round one across the threshold)
CHECK_THRESHOLD = 0.05
DETECTION_AGREEMENT = 0.9


@dataclass
class Progress:
    """How the training process talks to the job: messages, warnings and a percentage."""

    info: Callable[[str], None]
    warn: Callable[[str], None]
    percent: Callable[[float, str], None]
    # each finished epoch as numbers (the job page's chart), beside its message
    epoch: Callable[[EpochRecord], None] = lambda record: None


@dataclass
class Job:
    params: TrainParams
    settings: Settings
    workdir: Path
    progress: Progress
    export: ExportInfo
    target: Path  # where the .dlpk is written
    target_label: str  # how messages name where it goes
    pretrained: Pretrained | None = None  # the package to fine-tune (pretrained_model)
    group: Group = field(default_factory=lambda: Group(Placement("cpu")))  # this process's place in the job

    @property
    def leader(self) -> bool:
        """Whether this process reports and writes (rank 0); the others only train beside it."""
        return self.group.leader

    def reading(self, n: int, total: int) -> None:
        self.progress.percent(PREPARE * n / max(total, 1), "Reading chips")

    def checked(self, scanned: Scan[T]) -> Scan[T]:
        """A few unreadable files are skipped with a warning; many fail the job, naming them."""
        verdict = bad_chip_verdict(scanned)
        if verdict is not None:
            fatal, text = verdict
            if fatal:
                raise TrainingError(text)
            self.progress.warn(text)
        return scanned

    def scan_labels(self, unit: str) -> tuple[Reader, Scan[Any], list[ClassInfo]]:
        """Read every chip with the export's own reader, warn about classes that nothing is labelled with
        (``unit``: what a label is, "box" or "chip"), and give the reader, the scan and the classes."""
        reader = reader_for(self.export)
        per_class: Counter[int] = Counter()
        scanned = self.checked(
            scan(self.export, reader.load, self.reading, observe=lambda _image, t: per_class.update(reader.count(t)))
        )
        foreground = [c for c in self.export.classes if c.value != 0]
        absent = [c.name for i, c in enumerate(foreground, start=1) if per_class[i] == 0]
        if absent:
            self.progress.warn(f"Classes declared in the export but with no {unit}: {', '.join(absent)}.")
        return reader, scanned, foreground

    @cached_property
    def plan(self) -> Plan:
        try:
            return self.params.augmentation_plan(self.export.transforms_file)
        except ValueError as exc:  # the file changed since submission
            raise TrainingError(f"data_augmentation: {exc}.") from None

    def crop_size(self) -> int | None:
        return self.params.crop_size(self.plan)

    def chip_size(self, scanned: Scan[Any]) -> int:
        """The side chips are trained at: the requested chip size or crop, else the export's tile size (the
        first chip's, when the export does not say)."""
        return self.crop_size() or min(self.export.tile_size or scanned.sample(0)[0].shape[1:])

    def flips_and_turns(self, what: str) -> bool:
        """Whether to augment, for the families that only flip and turn ``what`` (CUSTOM and FILE transforms
        are said not to apply)."""
        augmentation = self.params.data_augmentation
        if augmentation in ("CUSTOM", "FILE"):
            self.progress.warn(
                f"{self.params.model_type} trains with flips and quarter turns; {augmentation} augmentation is not "
                f"applied to {what} yet."
            )
        return augmentation != "NONE"

    def augmenters(self, norm: Normalization) -> tuple[Augmenter | None, Augmenter | None]:
        """The CUSTOM or FILE transforms for training and for validation samples (None: none named)."""
        plan = self.plan
        if not (plan.training or plan.validation):
            return None, None
        named = [
            f"{part} {', '.join(a.name for a in augs) or 'none'}"
            for part, augs in (("training", plan.training), ("validation", plan.validation))
        ]
        self.progress.info(f"Augmentation from {plan.source}: {'; '.join(named)}.")

        def make(augs: tuple[Augmentation, ...]) -> Augmenter | None:
            return Augmenter(augs, norm.band_min, norm.band_max) if augs else None

        return make(plan.training), make(plan.validation)

    def split(self, scanned: Scan[Any]) -> tuple[list[int], list[int]]:
        train, valid = split(len(scanned.items), self.params.validation_percent)
        self.progress.info(
            f"Training on {len(train)} chips, validating on {len(valid)} ({self.params.validation_percent:g}%)."
        )
        return train, valid

    def use_gpu(self) -> bool:
        """Whether this run trains on a GPU (the plan decided); says where it trains."""
        plan = self.group.plan
        backbone = f" ({self.params.backbone.lower()})" if self.params.backbone else ""
        self.progress.info(f"Training {self.params.model_type}{backbone} on {plan.describe()}.")
        return plan.accelerator == "gpu"

    def fit_options(self, use_gpu: bool, scanned: Scan[Any]) -> FitOptions:
        p = self.params
        return FitOptions(
            max_epochs=p.max_epochs, batch_size=p.batch_size, lr=p.learning_rate, monitor=p.monitor,
            stop_training=p.stop_training, use_gpu=use_gpu, workdir=self.workdir,
            num_workers=loader_workers(self.group.plan, in_memory=scanned.samples is not None), group=self.group,
            compile="inductor" if p.compile_model else None,
        )  # fmt: skip

    def on_epoch(self, record: EpochRecord, max_epochs: int) -> None:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in record.metrics.items())
        text = (
            f"Epoch {record.epoch}/{max_epochs}: train_loss {record.train_loss:.4f}, valid_loss {record.valid_loss:.4f}"
        )
        # the percentage first: a client that sees the epoch's message also sees its progress
        self.progress.percent(
            PREPARE + (PACKAGE - PREPARE) * record.epoch / max_epochs, f"Epoch {record.epoch}/{max_epochs}"
        )
        if record.seconds == record.seconds:  # not NaN: timed
            speed = record.train_images_per_second
            # three significant figures: a slow detector's 0.304 images/s is not rounded to 0.3 (nor 1234 to 1.23e+03)
            shown_speed = f"{speed:.0f}" if speed >= 100 else f"{speed:.3g}"
            timing = (f"{record.seconds:.1f} s (training {shown_speed} images/s, "
                      f"validation {record.valid_seconds:.1f} s)")  # fmt: skip
            shown = f"{shown}; {timing}" if shown else timing
        self.progress.info(f"{text}, {shown}" if shown else text)
        self.progress.epoch(record)

    def fit(
        self, task: OneCycleTask, train_set: Dataset[Any], valid_set: Dataset[Any], scanned: Scan[Any],
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> FitResult:  # fmt: skip
        """Train ``task`` with the request's options on this job's devices, every epoch reported, and say how it
        ended (the families whose one network trains as the request says)."""
        options = self.fit_options(self.use_gpu(), scanned)
        result = fit(task, train_set, valid_set, options, self.on_epoch, self.progress.info, self.progress.warn,
                     collate_fn=collate_fn)  # fmt: skip
        self.report_fit(result)
        return result

    def report_fit(self, result: FitResult) -> None:
        monitor = self.params.monitor.lower()
        if result.stopped_early:
            self.progress.info(f"Early stopping: no improvement in {monitor} for 5 epochs.")
        if result.best_epoch is not None:
            self.progress.info(f"Keeping the weights of epoch {result.best_epoch} (best {monitor}).")
        self.progress.percent(PACKAGE, "Writing the deep learning package")

    def announce_model(self, network: nn.Module, notes: list[str], pretrained: bool) -> bool:
        """Say where the backbone's weights came from, start from the pretrained_model package's weights
        when there is one; True when the backbone is to stay frozen."""
        if self.pretrained is not None:
            self._fine_tune(network, self.pretrained)
            return self.params.freeze_model
        for note in notes:
            (self.progress.info if pretrained else self.progress.warn)(note)
        if self.params.freeze_model and not pretrained:
            self.progress.warn("freeze_model: the backbone has no pretrained weights to keep, so it is trained too.")
        return self.params.freeze_model and pretrained

    def check_package(self, pixels: np.ndarray, expected: np.ndarray) -> None:
        """Run the package just written through its own inference function, in an interpreter that cannot
        import geotrain, on a validation chip's raw ``pixels``; it must give the ``expected`` output of the
        trained model (on at least ``AGREEMENT`` of the pixels: a GPU and a CPU may round differently).
        A package that fails is removed and fails the job."""
        if not self.settings.check_packages:
            return
        agreement = 0.0

        def compare(workdir: Path) -> str | None:
            nonlocal agreement
            output = verify.run_function(self.target, pixels, workdir).reshape(expected.shape)
            agreement = float((output == expected).mean())
            if agreement < AGREEMENT:
                return f"its inference function agrees with the trained model on only {agreement:.1%} of a chip"
            return None

        self._checked(compare)
        self.progress.info(
            f"Checked the package: its inference function, run apart from geotrain as ArcGIS runs it, agrees "
            f"with the trained model on {agreement:.1%} of a validation chip's pixels."
        )

    def check_translator(self, pixels: np.ndarray, expected: np.ndarray) -> None:
        """``check_package`` for image translation packages: ``updatePixels`` on raw input ``pixels`` must give
        the trained model's ``expected`` values (bands x rows x cols) to within a thousandth of their range."""
        if not self.settings.check_packages:
            return
        worst = 0.0

        def compare(workdir: Path) -> str | None:
            nonlocal worst
            output = verify.run_function(self.target, pixels, workdir).reshape(expected.shape)
            span = max(float(expected.max() - expected.min()), 1e-6)
            worst = float(np.abs(output - expected).max()) / span
            if worst > 1e-3:
                return f"its inference function's output differs from the trained model's by {worst:.2%} of its range"
            return None

        self._checked(compare)
        self.progress.info(
            f"Checked the package: its inference function, run apart from geotrain as ArcGIS runs it, gives the "
            f"trained model's output on a validation chip (largest difference {worst:.1e} of its range)."
        )

    def check_detector(self, pixels: np.ndarray, expected: list[tuple[str, float, list[float]]]) -> None:
        """``check_package`` for detection packages: ``vectorize`` on a validation chip's raw ``pixels``, with
        the check's threshold and no padding, must give the ``expected`` (class, confidence 0..1, box)
        detections of the trained model, in the same order; boxes are compared where the package gives
        boxes (outlines of instance masks follow pixel edges instead)."""
        if not self.settings.check_packages:
            return

        def compare(workdir: Path) -> str | None:
            scalars = {"threshold": CHECK_THRESHOLD, "padding": 0}
            features = verify.run_detector(self.target, pixels, workdir, scalars)
            agreement = _detections_agree(features, expected)
            if agreement < DETECTION_AGREEMENT:
                return (
                    f"its inference function gives {len(features)} detections where the trained model gives "
                    f"{len(expected)}, {agreement:.0%} of them alike"
                )
            return None

        self._checked(compare)
        self.progress.info(
            f"Checked the package: its inference function, run apart from geotrain as ArcGIS runs it, gives the "
            f"trained model's {len(expected)} detections (confidence at least {CHECK_THRESHOLD}) on a validation chip."
        )

    def check_classifier(self, blocks: list[np.ndarray], expected: list[tuple[str, str]]) -> None:
        """``check_package`` for object classification packages: ``vectorize`` on validation chips' raw
        pixels (``blocks``, one per object) must give each chip the trained model's (label, confidence)."""
        if not self.settings.check_packages:
            return

        def compare(workdir: Path) -> str | None:
            features = verify.run_object_classifier(self.target, blocks, workdir, {})
            given = [(str(f["attributes"]["Label"]), str(f["attributes"]["Confidence"])) for f in features]
            alike = sum(_labels_agree(g, e) for g, e in zip(given, expected, strict=False))
            if len(given) != len(expected) or alike < DETECTION_AGREEMENT * len(expected):
                return f"its inference function classifies {alike} of {len(expected)} validation chips alike"
            return None

        self._checked(compare)
        self.progress.info(
            f"Checked the package: its inference function, run apart from geotrain as ArcGIS runs it, classifies "
            f"{len(expected)} validation chip(s) as the trained model does."
        )

    def check_tracker(
        self, frames: list[np.ndarray], box: tuple[float, float, float, float],
        expected: tuple[list[float], float, np.ndarray],
    ) -> None:  # fmt: skip
        """``check_package`` for trackers: the package's tracker, started on the first of ``frames`` (raw pixels)
        with ``box`` and updated on the second, must find the trained model's ``expected`` box (within 0.01 px),
        score (within 0.001) and mask (on at least ``AGREEMENT`` of the frame's pixels)."""
        if not self.settings.check_packages:
            return
        agreement = 0.0

        def compare(workdir: Path) -> str | None:
            nonlocal agreement
            tracks = verify.run_tracker(self.target, verify.Frames(frames, [list(box)]), workdir)
            (found,) = tracks[1]
            wanted_box, wanted_score, wanted_mask = expected
            agreement = float((found["mask"] == (wanted_mask > 0.35)).mean())
            if not np.allclose(found["bbox"], wanted_box, atol=0.01) or abs(found["score"] - wanted_score) > 1e-3:
                return (
                    f"its tracker finds the object at {found['bbox']} where the trained model finds it at {wanted_box}"
                )
            if agreement < AGREEMENT:
                return f"its tracker's mask agrees with the trained model's on only {agreement:.1%} of a frame"
            return None

        self._checked(compare)
        self.progress.info(
            f"Checked the package: its tracker, run apart from geotrain, follows a validation object from one frame "
            f"to the next as the trained model does (box alike, mask alike on {agreement:.1%} of the frame)."
        )

    def _checked(self, compare: Callable[[Path], str | None]) -> None:
        """Run ``compare`` in a scratch folder; the problem it names (or the package's) removes the package
        and fails the job."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="check-", dir=self.workdir))
        try:
            problem = compare(workdir)
            if problem is not None:
                raise PackageError(problem)
        except PackageError as exc:
            self.target.unlink(missing_ok=True)
            raise TrainingError(
                f"The package failed its check and was not kept: {exc}. This is a fault of geotrain; "
                "please report it with the job's messages."
            ) from None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _fine_tune(self, network: nn.Module, found: Pretrained) -> None:
        """Load the package's weights into ``network``: those whose shape differs (the class outputs, when
        the export's classes are not the package's) start afresh, as arcgis.learn gives such a model a new
        head."""
        uri = found.label
        try:
            state = package.read_weights(found.local)
        except (pickle.UnpicklingError, RuntimeError, PackageError, zipfile.BadZipFile) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingError(
                f"pretrained_model: the weights in {uri} are not plain tensors ({first[:300]}). geotrain loads "
                "weights only, never code from a package: use a package a geotrain job wrote."
            ) from None
        own = network.state_dict()
        usable = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
        if not usable:
            raise TrainingError(f"pretrained_model: none of the weights in {uri} fit this {self.params.model_type}.")
        network.load_state_dict(usable, strict=False)
        fresh = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
        theirs = [str(c.get("Name")) for c in found.emd.get("Classes", [])]
        ours = [c.name for c in self.export.classes]
        text = f"Fine-tuning from {uri}: {len(usable)} of {len(own)} weight tensors loaded."
        if fresh:
            text += f" {len(fresh)} start afresh (first: {fresh[0]})."
        if theirs != ours:
            text += f" The package's classes ({', '.join(theirs)}) differ from the export's ({', '.join(ours)}):"
            text += " the class outputs are trained anew."
        self.progress.info(text)

    def model_emd(
        self,
        model_kind: str,
        model_name: str,
        scanned: Scan[Any],
        chip_size: int,
        result: FitResult,
    ) -> dict[str, Any]:
        colors = class_colors(self.export.classes)
        return emd_writer.common_emd(
            name=self.target.stem,
            model_type=self.params.model_type,
            model_kind=model_kind,
            model_name=model_name,
            backbone=self.params.backbone,
            classes=[
                emd_writer.ClassEntry(c.value, c.name, rgb) for c, rgb in zip(self.export.classes, colors, strict=True)
            ],
            bands=scanned.num_bands,
            export=self.export,
            tile_size=(chip_size, chip_size),
            result=result,
            monitored=MONITOR_KEYS[self.params.monitor][0],
            normalization=normalization_stats(scanned.normalization),
            is_imagenet=scanned.normalization.imagenet,
        )

    def write_package(
        self,
        emd: dict[str, Any],
        state_dict: dict[str, torch.Tensor],
        result: FitResult,
        show_results: bytes,
        report_rows: list[tuple[str, str]],
        per_class: dict[str, dict[str, float]],
        summary: str,
    ) -> None:
        history = result.history
        contents = package.PackageContents(
            name=self.target.stem,
            emd=emd,
            state_dict=state_dict,
            loss_graph=pictures.loss_graph(
                [h.epoch for h in history], [h.train_loss for h in history], [h.valid_loss for h in history]
            ),
            show_results=show_results,
            report_rows=report_rows,
            per_class=per_class,
        )
        try:
            package.write(contents, self.target)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise TrainingError(
                f"The disk holding {self.target_label} is full: the package was not written (no partial file is left).",
                ["Free space there, or give output_name a folder on another file share, and submit the job again."],
            ) from None
        # the package holds what is worth keeping; checkpoints stay only for jobs that did not finish
        shutil.rmtree(self.workdir / "checkpoints", ignore_errors=True)
        self.progress.info(f"Wrote {self.target_label} ({summary}).")


def loader_workers(plan: Placement, in_memory: bool) -> int:
    """DataLoader worker processes for one training process, from its share of the host's cores: none for
    chips held in memory on the CPU (the training process prepares them faster than workers start, and
    the cores are busy with the model); else up to 4 (CPU, reading chips from disk) or 8 (GPU: the cores
    only feed it), one core kept for the training process itself on a GPU."""
    if plan.accelerator == "gpu":
        return min(8, plan.threads - 1)
    return 0 if in_memory else min(4, plan.threads)


def _detections_agree(features: list[dict[str, Any]], expected: list[tuple[str, float, list[float]]]) -> float:
    """The share of detections alike in both lists, position by position: same class, confidence within 0.1
    percentage points and, for box rings, corners within 0.01 px."""
    if not features and not expected:
        return 1.0
    alike = 0
    for feature, (name, score, box) in zip(features, expected, strict=False):
        attributes, rings = feature["attributes"], feature["geometry"]["rings"]
        same = attributes["Class"] == name and abs(float(attributes["Confidence"]) - 100 * score) < 0.1
        if same and len(rings) == 1 and len(rings[0]) == 5:
            xs, ys = [p[0] for p in rings[0]], [p[1] for p in rings[0]]
            same = bool(np.allclose([min(xs), min(ys), max(xs), max(ys)], box, atol=0.01))
        alike += same
    return alike / max(len(features), len(expected))


def _labels_agree(given: tuple[str, str], expected: tuple[str, str]) -> bool:
    """Same label, and each confidence (percent, ``;``-separated for several labels) within 0.1 points."""
    if given[0] != expected[0]:
        return False
    ours, theirs = ([float(v) for v in text.split(";") if v.strip()] for text in (given[1], expected[1]))
    return len(ours) == len(theirs) and bool(np.allclose(ours, theirs, atol=0.1))


def class_colors(classes: list[ClassInfo]) -> list[tuple[int, int, int]]:
    out = []
    for i, c in enumerate(classes):
        if c.color is not None:
            out.append(c.color)
        else:  # [-1,-1,-1] in the export: no symbology, so spread hues evenly
            r, g, b = colorsys.hsv_to_rgb((i * 0.618) % 1.0, 0.75, 0.95)
            out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def normalization_stats(norm: Normalization) -> dict[str, Any]:
    return {
        "band_min_values": norm.band_min,
        "band_max_values": norm.band_max,
        "band_mean_values": (norm.mean / norm.scale).tolist(),
        "band_std_values": (norm.std / norm.scale).tolist(),
        "scale": norm.scale,
    }
