"""CYCLEGAN on a CycleGAN export (A/ and B/, unpaired): two ResNet-block generators (A to B, B to A) and two
PatchGAN discriminators; adversarial (least-squares by default), cycle-consistency (10x) and, where the two
domains have as many bands, identity (5x) losses. Validation measures the round trip A to B to A (L1, PSNR,
SSIM): there is no paired target to compare with. The package translates A to B."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch import nn
from torch.utils.data import Dataset

from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk import pictures
from geotrain.dlpk.prf.geotrain_networks import ResnetGenerator, pad_to_stride
from geotrain.errors import TrainingError
from geotrain.training.data.augment import crop_origin
from geotrain.training.data.readers import reader_for
from geotrain.training.data.scan import Normalization, Scan, scan, split
from geotrain.training.fit import SEED, OneCycleTask, fit
from geotrain.training.job import Job, normalization_stats
from geotrain.training.translation import GAN_RATE, ImageQuality, TranslationMetrics, patch_discriminator

GEN_BLOCKS = 9  # arcgis.learn's default
CYCLE_WEIGHT = 10.0
IDENTITY_WEIGHT = 5.0  # half the cycle's, as in CycleGAN


class UnpairedChips(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A chip of A with a chip of B: a random one in training, the same one each time in validation."""

    def __init__(
        self, a: Scan[None], a_idx: Sequence[int], b: Scan[None], b_idx: Sequence[int], size: int, train: bool
    ) -> None:
        self.a, self.a_idx, self.b, self.b_idx, self.size, self.train = a, list(a_idx), b, list(b_idx), size, train

    def __len__(self) -> int:
        return len(self.a_idx)

    def raw_a(self, i: int) -> np.ndarray:
        return self._crop(self.a.sample(self.a_idx[i])[0], random=False)

    def _crop(self, image: np.ndarray, random: bool) -> np.ndarray:
        rows, cols = image.shape[1:]
        if rows < self.size or cols < self.size:
            pad = ((0, 0), (0, max(0, self.size - rows)), (0, max(0, self.size - cols)))
            image = np.pad(image, pad, mode="reflect")
            rows, cols = image.shape[1:]
        top, left = crop_origin(rows, cols, self.size, random=random)
        crop: np.ndarray = image[:, top : top + self.size, left : left + self.size]
        if random and int(torch.randint(0, 2, (1,))):
            crop = crop[:, :, ::-1]
        return crop

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(torch.randint(0, len(self.b_idx), (1,))) if self.train else i % len(self.b_idx)
        a = self._crop(self.a.sample(self.a_idx[i])[0], random=self.train)
        b = self._crop(self.b.sample(self.b_idx[j])[0], random=self.train)
        return torch.from_numpy(self.a.normalization.apply(a)), torch.from_numpy(self.b.normalization.apply(b))


class CycleTask(OneCycleTask):
    network: ResnetGenerator  # A to B: what the package holds

    def __init__(
        self, a_to_b: ResnetGenerator, b_to_a: ResnetGenerator, bands: tuple[int, int], lr: float, lsgan: bool,
        norm_a: Normalization,
    ) -> None:  # fmt: skip
        super().__init__()
        self.network, self.b_to_a = a_to_b, b_to_a
        self.d_a, self.d_b = patch_discriminator(bands[0]), patch_discriminator(bands[1])
        self.automatic_optimization = False
        self.lr, self.lsgan, self.identity = lr, lsgan, bands[0] == bands[1]
        self.quality = ImageQuality(norm_a, (norm_a.band_min, norm_a.band_max))
        self.last_metrics: TranslationMetrics | None = None  # of the round trip

    @staticmethod
    def _run(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[-2:]
        padded, _, _ = pad_to_stride(x)
        out: torch.Tensor = network(padded)
        return out[..., :rows, :cols]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.network, x)

    def _adversarial(self, verdict: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.full_like(verdict, 1.0 if real else 0.0, dtype=torch.float)
        if self.lsgan:
            return F.mse_loss(verdict.float(), target)
        return F.binary_cross_entropy_with_logits(verdict.float(), target)

    def configure_optimizers(self) -> Any:
        generators = [*self.network.parameters(), *self.b_to_a.parameters()]
        discriminators = [*self.d_a.parameters(), *self.d_b.parameters()]
        return [self.one_cycle(generators, (0.5, 0.999)), self.one_cycle(discriminators, (0.5, 0.999))]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        a, b = batch
        g_opt, d_opt = cast(list[LightningOptimizer], self.optimizers())
        fake_b, fake_a = self._run(self.network, a), self._run(self.b_to_a, b)
        cycle = F.l1_loss(self._run(self.b_to_a, fake_b).float(), a) + F.l1_loss(
            self._run(self.network, fake_a).float(), b
        )
        g_loss = self._adversarial(self.d_b(fake_b), True) + self._adversarial(self.d_a(fake_a), True)
        g_loss = g_loss + CYCLE_WEIGHT * cycle
        if self.identity:
            same = F.l1_loss(self._run(self.network, b).float(), b) + F.l1_loss(self._run(self.b_to_a, a).float(), a)
            g_loss = g_loss + IDENTITY_WEIGHT * same
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()
        d_loss = 0.5 * (
            self._adversarial(self.d_b(b), True) + self._adversarial(self.d_b(fake_b.detach()), False)
        ) + 0.5 * (self._adversarial(self.d_a(a), True) + self._adversarial(self.d_a(fake_a.detach()), False))
        d_opt.zero_grad()  # the generators' step left gradients in the discriminators too
        self.manual_backward(d_loss)
        d_opt.step()
        for schedule in self.lr_schedulers() or []:  # type: ignore[union-attr]
            schedule.step()
        # the round trips' L1, which validation measures too, so the two curves compare
        self.log("train_loss", cycle, on_step=False, on_epoch=True, batch_size=len(a), sync_dist=True)
        self.log("discriminator_loss", d_loss, on_step=False, on_epoch=True, batch_size=len(a), sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self.quality.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        a, b = batch
        round_a = self._run(self.b_to_a, self._run(self.network, a)).float()
        round_b = self._run(self.network, self._run(self.b_to_a, b)).float()
        loss = F.l1_loss(round_a, a) + F.l1_loss(round_b, b)
        self.log("valid_loss", loss, on_step=False, on_epoch=True, batch_size=len(a), sync_dist=True)
        self.quality.update(round_a, a)

    def on_validation_epoch_end(self) -> None:
        self.last_metrics = self.quality.compute()
        self.log("psnr", self.last_metrics.psnr)
        self.log("ssim", self.last_metrics.ssim)


def train(job: Job) -> None:
    params, export, progress = job.params, job.export, job.progress
    if not export.items_b:
        raise TrainingError("in_folder: the CycleGAN export has no chips in B/images.")
    load = reader_for(export).load
    scan_a: Scan[None] = job.checked(scan(export, load, job.reading))
    scan_b: Scan[None] = job.checked(scan(dataclasses.replace(export, items=export.items_b, band_stats=None), load))
    if len(scan_a.items) < 2 or len(scan_b.items) < 2:
        raise TrainingError("in_folder: each of A/ and B/ needs at least 2 readable chips.")
    a_train, a_valid = job.split(scan_a)
    b_train, b_valid = split(len(scan_b.items), params.validation_percent, SEED)
    size = job.chip_size(scan_a)
    blocks = int(params.argument("gen_blocks", GEN_BLOCKS))
    lsgan = bool(params.argument("lsgan", True))
    bands = (scan_a.num_bands, scan_b.num_bands)
    progress.info(
        f"Translating {len(scan_a.items)} chips of A ({bands[0]} band(s)) and {len(scan_b.items)} of B ({bands[1]}), "
        f"unpaired; generators of {blocks} residual blocks, {'least-squares' if lsgan else 'cross-entropy'} "
        "adversarial loss."
    )
    a_to_b, b_to_a = ResnetGenerator(bands[0], bands[1], blocks), ResnetGenerator(bands[1], bands[0], blocks)
    task = CycleTask(a_to_b, b_to_a, bands, params.learning_rate or GAN_RATE, lsgan, scan_a.normalization)
    options = job.fit_options(job.use_gpu(), scan_a)
    if params.learning_rate is None:
        progress.info(f"Learning rate {GAN_RATE:g} (CycleGAN's): the finder does not apply to networks in a game.")
        options.lr = GAN_RATE
    train_set = UnpairedChips(scan_a, a_train, scan_b, b_train, size, params.data_augmentation != "NONE")
    valid_set = UnpairedChips(scan_a, a_valid, scan_b, b_valid, size, False)
    result = fit(task, train_set, valid_set, options, job.on_epoch, progress.info, progress.warn)
    job.report_fit(result)
    if not job.leader:
        return  # the package is rank 0's to write

    psnr, ssim = result.metrics.psnr, result.metrics.ssim
    emd = job.model_emd("CycleGAN", "CycleGAN", scan_a, size, result)
    emd["ModelParameters"].update(
        {"generator": "resnet_blocks", "gen_blocks": blocks, "out_channels": bands[1], "residual": False}
    )
    emd.update(
        {
            "Classes": [],
            "TargetNormalizationStats": normalization_stats(scan_b.normalization),
            "lsgan": lsgan,
            # the round trip A -> B -> A: no paired target to score against
            "psnr": emd_writer.metric_text(psnr),
            "ssim": emd_writer.metric_text(ssim),
        }
    )
    inputs, made, back = _samples(task, valid_set, scan_a.normalization, scan_b.normalization)
    job.write_package(
        emd,
        a_to_b.state_dict(),
        result,
        pictures.translation_results(inputs, made, back, ("A", "A to B", "A to B to A"), shared_stretch=False),
        [
            ("Model", "CycleGAN"),
            ("Generator", f"{blocks} residual blocks"),
            ("Learning rate", f"{result.lr:.4e}"),
            ("PSNR of the round trip A-B-A (dB)", f"{psnr:.2f}"),
            ("SSIM of the round trip", f"{ssim:.4f}"),
            ("Epochs", str(len(result.history))),
        ],
        {},
        f"round trip PSNR {psnr:.2f} dB, SSIM {ssim:.4f}",
    )
    raw = valid_set.raw_a(0)
    job.check_translator(raw, _raw(_through(task.network, raw, scan_a.normalization), scan_b.normalization))


def _through(network: nn.Module, raw: np.ndarray, norm: Normalization) -> torch.Tensor:
    network.eval()
    x = torch.from_numpy(norm.apply(raw))[None].to(next(network.parameters()).device)
    with torch.no_grad():
        return CycleTask._run(network, x)[0].float().cpu()


def _raw(normalized: torch.Tensor, norm: Normalization) -> np.ndarray:
    return norm.revert(normalized.numpy())


def _samples(
    task: CycleTask, valid_set: UnpairedChips, norm_a: Normalization, norm_b: Normalization
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    inputs, made, back = [], [], []
    for i in range(min(4, len(valid_set))):
        raw = valid_set.raw_a(i)
        fake_b = _through(task.network, raw, norm_a)
        task.b_to_a.eval()
        with torch.no_grad():
            round_a = CycleTask._run(task.b_to_a, fake_b[None].to(task.device))[0].float().cpu()
        inputs.append(raw)
        made.append(_raw(fake_b, norm_b))
        back.append(_raw(round_a, norm_a))
    return inputs, made, back
