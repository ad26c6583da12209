"""Image translation on Export_Tiles: SUPERRESOLUTION (each chip learned back from a copy made
``downsample_factor`` times coarser and resampled to the chip's size, as arcgis.learn prepares its data),
PIX2PIX (images/ to images2/: a U-Net generator against a PatchGAN discriminator, plus the L1 distance to the
target) and PIX2PIXHD (pix2pixHD's global generator against discriminators at several scales, with feature
matching). PSNR and SSIM on the validation split."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch import nn
from torch.utils.data import Dataset
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk import pictures
from geotrain.dlpk.prf.geotrain_networks import Translator, pad_to_stride
from geotrain.dlpk.prf.geotrain_networks import translator as translator_network
from geotrain.errors import TrainingError
from geotrain.training.data.augment import crop_origin
from geotrain.training.data.readers import reader_for
from geotrain.training.data.scan import BandStats, Normalization, Scan, scan
from geotrain.training.fit import OneCycleTask, fit, freeze_except
from geotrain.training.job import Job, normalization_stats
from geotrain.training.models.registry import with_weights

MODEL_NAMES = {"SUPERRESOLUTION": "SuperResolution", "PIX2PIX": "Pix2Pix", "PIX2PIXHD": "Pix2PixHD"}
DOWNSAMPLE_FACTOR = 4  # arcgis.learn's default
GAN_RATE = 2e-4  # pix2pix's own rate: the learning-rate finder does not apply to two networks in a game
L1_WEIGHT = 100.0  # pix2pix: the L1 distance to the target outweighs the discriminator's verdict


@dataclass(frozen=True)
class TranslationMetrics:
    psnr: float
    ssim: float


def degrade(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``x`` (bands x rows x cols) made ``factor`` times coarser (area average), then resampled back to its
    size: what a raster at the coarser cell size looks like once resampled to the finer one."""
    rows, cols = x.shape[-2:]
    coarse = F.interpolate(x[None], size=(math.ceil(rows / factor), math.ceil(cols / factor)), mode="area")
    return F.interpolate(coarse, size=(rows, cols), mode="bilinear", align_corners=False)[0]


class TranslationChips(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(input, target) pairs, both normalized; the same crop, flips and turns for both. ``factor``: the
    input is the target made that many times coarser (super-resolution)."""

    def __init__(
        self,
        scanned: Scan[np.ndarray | None],
        indices: Sequence[int],
        chip_size: int,
        train: bool,
        target_norm: Normalization,
        factor: int | None,
    ) -> None:
        self.scanned, self.indices, self.chip_size = scanned, list(indices), chip_size
        self.train, self.target_norm, self.factor = train, target_norm, factor

    def __len__(self) -> int:
        return len(self.indices)

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The chip's input and target pixels as trained on (centre crop), before normalization."""
        image, target = self.scanned.sample(self.indices[i])
        return self._crop(image, image if target is None else target, random=False)

    def _crop(self, image: np.ndarray, target: np.ndarray, random: bool) -> tuple[np.ndarray, np.ndarray]:
        size = self.chip_size
        rows, cols = image.shape[1:]
        if rows < size or cols < size:
            pad = ((0, 0), (0, max(0, size - rows)), (0, max(0, size - cols)))
            image, target = np.pad(image, pad, mode="reflect"), np.pad(target, pad, mode="reflect")
            rows, cols = image.shape[1:]
        top, left = crop_origin(rows, cols, size, random=random)
        window = (slice(None), slice(top, top + size), slice(left, left + size))
        return image[window], target[window]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.scanned.sample(self.indices[i])
        image, target = self._crop(image, image if target is None else target, random=self.train)
        if self.train:
            # torch's generator: seeded by Lightning, and differently in every DataLoader worker
            flip_x, flip_y, turns = (int(v) for v in torch.randint(0, 4, (3,)))
            if flip_x % 2:
                image, target = image[:, :, ::-1], target[:, :, ::-1]
            if flip_y % 2:
                image, target = image[:, ::-1, :], target[:, ::-1, :]
            if turns and image.shape[1] == image.shape[2]:
                image, target = np.rot90(image, turns, axes=(1, 2)), np.rot90(target, turns, axes=(1, 2))
        y = torch.from_numpy(self.target_norm.apply(target))
        if self.factor is not None:
            return degrade(y, self.factor), y  # the target's own normalization: the network adds to its input
        return torch.from_numpy(self.scanned.normalization.apply(image)), y


def hd_generator(arguments: dict[str, Any]) -> dict[str, Any]:
    """pix2pixHD's generator as the EMD records it (arcgis.learn's argument names and defaults): the global one,
    and with ``gen_network`` 'local' its local enhancers (0 without)."""
    local = arguments.get("gen_network", "global") == "local"
    return {
        "generator": "resnet_blocks",
        "gen_blocks": int(arguments.get("n_blocks_global", 9)),
        "width": int(arguments.get("n_gen_filters", 64)),
        "downsample": int(arguments.get("n_downsample_global", 4)),
        "local_enhancers": int(arguments.get("n_local_enhancers", 1)) if local else 0,
        "local_blocks": int(arguments.get("n_blocks_local", 3)),
    }


def adversary_for(model_type: str, arguments: dict[str, Any]) -> Adversary:
    if model_type == "PIX2PIX":
        return Adversary()
    return Adversary(
        scales=int(arguments.get("n_dscr", 2)),
        layers=int(arguments.get("n_layers_dscr", 3)),
        width=int(arguments.get("n_dscr_filters", 64)),
        norm="batch" if arguments.get("norm") == "batch" else "instance",
        lsgan=bool(arguments.get("lsgan", True)),
        feature_weight=float(arguments.get("lambda_feat", 10.0)) if arguments.get("feat_loss", True) else 0.0,
        l1_weight=float(arguments.get("lambda_l1", L1_WEIGHT)),
    )


class ImageQuality(nn.Module):
    """PSNR and SSIM over a validation pass, scored on 0..1 between ``unit``'s per-band (low, high) values.
    Images come ``norm``-normalized; one multiply-add per pixel, (y * std + mean - low) / (high - low), brings
    them to that scale."""

    def __init__(self, norm: Normalization, unit: tuple[list[float], list[float]]) -> None:
        super().__init__()
        low, high = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in unit)
        mean = torch.as_tensor(norm.mean / norm.scale, dtype=torch.float32)[:, None, None]
        std = torch.as_tensor(norm.std / norm.scale, dtype=torch.float32)[:, None, None]
        span = (high - low).clamp(min=1e-6)
        # derived from the data each run: kept out of checkpoints
        self.register_buffer("gain", std / span, persistent=False)
        self.register_buffer("offset", (mean - low) / span, persistent=False)
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0)

    def to_unit(self, y: torch.Tensor) -> torch.Tensor:
        gain: torch.Tensor = self.gain  # type: ignore[assignment]  # registered buffers
        offset: torch.Tensor = self.offset  # type: ignore[assignment]
        return (y.float() * gain + offset).clamp(0, 1)

    def reset(self) -> None:
        self.psnr.reset()
        self.ssim.reset()

    def update(self, made: torch.Tensor, wanted: torch.Tensor) -> None:
        made, wanted = self.to_unit(made), self.to_unit(wanted)
        self.psnr.update(made, wanted)
        self.ssim.update(made, wanted)

    def compute(self) -> TranslationMetrics:
        ssim = self.ssim.compute()
        assert isinstance(ssim, torch.Tensor)  # one figure: no contrast-sensitivity maps asked for
        return TranslationMetrics(float(self.psnr.compute()), float(ssim))


def patch_discriminator(in_channels: int, width: int = 64) -> nn.Sequential:
    """pix2pix's PatchGAN: a verdict for each overlapping patch of the (input, output) pair, not one a chip."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(2 * width, 4 * width, 4, 1, 1, bias=False), nn.BatchNorm2d(4 * width),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(4 * width, 1, 4, 1, 1),
    )  # fmt: skip


@dataclass(frozen=True)
class Adversary:
    """How a paired translator's generator is trained against discriminators: pix2pix's one PatchGAN with
    cross-entropy verdicts, or pix2pixHD's several (each on the pair at half the previous one's resolution)
    with least-squares verdicts and feature matching (the generator also matches, layer by layer, what the
    discriminators see in the real pair). The L1 distance to the target counts ``l1_weight`` times."""

    scales: int = 1
    layers: int = 3
    width: int = 64
    norm: str = "batch"
    lsgan: bool = False
    feature_weight: float = 0.0
    l1_weight: float = L1_WEIGHT


class PatchStages(nn.Module):
    """A PatchGAN whose every stage's output is kept (feature matching reads them); the last is the verdict
    for each overlapping patch."""

    def __init__(self, in_channels: int, layers: int, width: int, norm: str) -> None:
        super().__init__()

        def normed(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm == "batch" else nn.InstanceNorm2d(c)

        stages: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, width, 4, 2, 2), nn.LeakyReLU(0.2, True))]
        c = width
        for stride in [2] * (layers - 1) + [1]:
            wider = min(2 * c, 512)
            stages.append(nn.Sequential(nn.Conv2d(c, wider, 4, stride, 2), normed(wider), nn.LeakyReLU(0.2, True)))
            c = wider
        stages.append(nn.Conv2d(c, 1, 4, 1, 2))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class Discriminators(nn.Module):
    def __init__(self, in_channels: int, adversary: Adversary) -> None:
        super().__init__()
        self.scales = nn.ModuleList(
            PatchStages(in_channels, adversary.layers, adversary.width, adversary.norm) for _ in range(adversary.scales)
        )

    def forward(self, pair: torch.Tensor) -> list[list[torch.Tensor]]:
        seen = []
        for i, discriminator in enumerate(self.scales):
            if i:
                pair = F.avg_pool2d(pair, 3, stride=2, padding=1, count_include_pad=False)
            seen.append(discriminator(pair))
        return seen


class TranslationTask(OneCycleTask):
    """``adversary``: train the generator against discriminators (pix2pix, pix2pixHD), else on the L1
    distance alone. ``unit``: (low, high) per target band, what PSNR and SSIM scale the target to 0..1 with."""

    network: nn.Module

    def __init__(
        self,
        network: nn.Module,
        encoder: nn.Module | None,
        adversary: Adversary | None,
        bands: int,
        lr: float,
        freeze: bool,
        target_norm: Normalization,
        unit: tuple[list[float], list[float]],
    ) -> None:
        """``bands``: the input's and the target's together, what the discriminators read."""
        super().__init__()
        self.network = network
        self.adversary = adversary
        self.discriminators = Discriminators(bands, adversary) if adversary is not None else None
        self.automatic_optimization = adversary is None
        self.lr = lr
        self.channels_last = True
        self.quality = ImageQuality(target_norm, unit)
        self.last_metrics: TranslationMetrics | None = None
        if freeze and encoder is not None:
            freeze_except(encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[-2:]
        padded, _, _ = pad_to_stride(x)
        out: torch.Tensor = self.network(padded)
        return out[..., :rows, :cols]

    def configure_optimizers(self) -> Any:
        if self.discriminators is None:
            return super().configure_optimizers()
        # each side its own Adam (pix2pix's betas) on the one-cycle schedule, stepped by hand below
        return [
            self.one_cycle([p for p in self.network.parameters() if p.requires_grad], (0.5, 0.999)),
            self.one_cycle(list(self.discriminators.parameters()), (0.5, 0.999)),
        ]

    def _verdict(self, seen: torch.Tensor, real: bool) -> torch.Tensor:
        assert self.adversary is not None
        target = torch.full_like(seen, 1.0 if real else 0.0, dtype=torch.float)
        if self.adversary.lsgan:
            return F.mse_loss(seen.float(), target)
        return F.binary_cross_entropy_with_logits(seen.float(), target)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        if self.discriminators is None or self.adversary is None:
            loss = F.l1_loss(self(x).float(), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
            return loss
        adversary, discriminators = self.adversary, self.discriminators
        g_opt, d_opt = cast(list[LightningOptimizer], self.optimizers())
        fake = self(x)
        real_pair = torch.cat([x, y], dim=1)
        d_loss = 0.5 * sum(
            (
                self._verdict(real[-1], True) + self._verdict(made[-1], False)
                for real, made in zip(
                    discriminators(real_pair), discriminators(torch.cat([x, fake.detach()], dim=1)), strict=True
                )
            ),
            torch.zeros((), device=x.device),
        )
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        fooled = discriminators(torch.cat([x, fake], dim=1))
        l1 = F.l1_loss(fake.float(), y)
        g_loss = adversary.l1_weight * l1
        for seen in fooled:
            g_loss = g_loss + self._verdict(seen[-1], True)
        if adversary.feature_weight:
            with torch.no_grad():
                reals = discriminators(real_pair)
            # pix2pixHD's weights: every stage but the verdict alike, every scale alike
            share = adversary.feature_weight * 4.0 / (adversary.layers + 1) / adversary.scales
            for seen, real in zip(fooled, reals, strict=True):
                for made_stage, real_stage in zip(seen[:-1], real[:-1], strict=True):
                    g_loss = g_loss + share * F.l1_loss(made_stage.float(), real_stage.float())
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()
        for schedule in self.lr_schedulers() or []:  # type: ignore[union-attr]
            schedule.step()
        # the part of the generator's loss that validation measures too, so the two curves compare
        self.log("train_loss", l1, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        self.log("discriminator_loss", d_loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        return None

    def on_validation_epoch_start(self) -> None:
        self.quality.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self(x).float()
        self.log("valid_loss", F.l1_loss(out, y), on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        self.quality.update(out, y)

    def on_validation_epoch_end(self) -> None:
        self.last_metrics = self.quality.compute()
        self.log("psnr", self.last_metrics.psnr)
        self.log("ssim", self.last_metrics.ssim)


def train(job: Job) -> None:
    params, export, progress = job.params, job.export, job.progress
    superres = params.model_type == "SUPERRESOLUTION"
    factor = int(params.argument("downsample_factor", DOWNSAMPLE_FACTOR)) if superres else None
    reader = reader_for(export)
    targets = BandStats()

    def observe(image: np.ndarray, target: np.ndarray | None) -> None:
        if not superres and target is not None:
            targets.add(target)

    scanned: Scan[np.ndarray | None] = job.checked(scan(export, reader.load, job.reading, observe))
    if not scanned.items:
        raise TrainingError("in_folder: no chip of the export could be read.")
    target_norm = scanned.normalization if superres else targets.plain()
    train_idx, valid_idx = job.split(scanned)
    chip_size = job.chip_size(scanned)
    augment = job.flips_and_turns("image pairs")
    train_set = TranslationChips(scanned, train_idx, chip_size, augment, target_norm, factor)
    valid_set = TranslationChips(scanned, valid_idx, chip_size, False, target_norm, factor)
    out_bands = scanned.num_bands if superres else len(target_norm.mean)
    if superres:
        progress.info(f"Inputs: each chip made {factor} times coarser, then resampled back to {chip_size} px.")
    else:
        progress.info(f"Translating {scanned.num_bands} band(s) of images/ into {out_bands} band(s) of images2/.")

    arch = params.backbone.lower()
    generator: dict[str, Any] = {"out_channels": out_bands, "residual": superres}
    encoder: nn.Module | None = None
    freeze = False
    if params.model_type == "PIX2PIXHD":
        generator.update(hd_generator(params.arguments))
        network: nn.Module = translator_network({"ModelParameters": {**generator, "in_channels": scanned.num_bands}})
        enhancers = generator["local_enhancers"]
        progress.info(
            f"Generator: pix2pixHD's global generator ({generator['downsample']} times down, "
            f"{generator['gen_blocks']} residual blocks, {generator['width'] * 2**enhancers} filters first)"
            + (
                f" on the input {2**enhancers} times coarser, and {enhancers} local enhancer(s) of "
                f"{generator['local_blocks']} residual blocks back to full size."
                if enhancers
                else "."
            )
        )
        if job.pretrained is not None:
            job.announce_model(network, [], False)  # its weights, from the package to fine-tune
        if params.argument("vgg_loss", False):
            progress.warn(
                "vgg_loss: the VGG feature loss needs VGG19's ImageNet weights, which geotrain does not use; the "
                "generator learns from the L1 distance to the target instead (lambda_l1)."
            )
    else:
        translator = Translator(arch, scanned.num_bands, out_bands, residual=superres)
        built = with_weights(translator, translator.encoder, arch, scanned.num_bands, params.weight_init_scheme)
        network, encoder = translator, translator.encoder
        freeze = job.announce_model(network, built.notes, built.pretrained_from is not None)
    adversary = None if superres else adversary_for(params.model_type, params.arguments)
    unit = (target_norm.band_min, target_norm.band_max)
    task = TranslationTask(
        network, encoder, adversary, scanned.num_bands + out_bands, params.learning_rate or GAN_RATE,
        freeze, target_norm, unit,
    )  # fmt: skip
    options = job.fit_options(job.use_gpu(), scanned)
    if adversary is not None and params.learning_rate is None:
        progress.info(
            f"Learning rate {GAN_RATE:g} (pix2pix's): the finder does not apply to a generator and its discriminator."
        )
        options.lr = GAN_RATE
    result = fit(task, train_set, valid_set, options, job.on_epoch, progress.info, progress.warn)
    job.report_fit(result)
    if not job.leader:
        return  # the package is rank 0's to write

    m: TranslationMetrics = result.metrics
    emd = job.model_emd(MODEL_NAMES[params.model_type], MODEL_NAMES[params.model_type], scanned, chip_size, result)
    emd["ModelParameters"].update(generator)
    emd.update(
        {
            "Classes": [],
            "TargetNormalizationStats": normalization_stats(target_norm),
            "psnr": emd_writer.metric_text(m.psnr),
            "ssim": emd_writer.metric_text(m.ssim),
        }
    )
    if factor is not None:
        emd["downsample_factor"] = factor
    inputs, outputs, wanted = _samples(task, valid_set)
    job.write_package(
        emd,
        network.state_dict(),
        result,
        pictures.translation_results(inputs, outputs, wanted),
        [
            ("Model", MODEL_NAMES[params.model_type]),
            ("Backbone" if encoder is not None else "Generator", arch if encoder is not None else "global"),
            ("Learning rate", f"{result.lr:.4e}"),
            ("PSNR (dB)", f"{m.psnr:.2f}"),
            ("SSIM", f"{m.ssim:.4f}"),
            ("Epochs", str(len(result.history))),
        ],
        {},
        f"PSNR {m.psnr:.2f} dB, SSIM {m.ssim:.4f}",
    )
    raw_input, _ = valid_set.raw(0)
    if superres:
        # the function gets what ArcGIS gives it: a raster resampled to the finer cell size
        x, _ = valid_set[0]
        raw_input = target_norm.revert(x.numpy())
    job.check_translator(
        raw_input, _translate(task, torch.from_numpy(scanned.normalization.apply(raw_input)), target_norm)
    )


def _samples(task: TranslationTask, valid_set: TranslationChips) -> tuple[list[np.ndarray], ...]:
    inputs, outputs, targets = [], [], []
    for i in range(min(4, len(valid_set))):
        x, _ = valid_set[i]
        _, target = valid_set.raw(i)
        given = x.numpy()
        norm = valid_set.target_norm if valid_set.factor is not None else valid_set.scanned.normalization
        inputs.append(norm.revert(given))
        outputs.append(_translate(task, x, valid_set.target_norm))
        targets.append(target)
    return inputs, outputs, targets


def _translate(task: TranslationTask, x: torch.Tensor, target_norm: Normalization) -> np.ndarray:
    """What the trained network makes of normalized input, in the target's values."""
    task.eval()
    with torch.no_grad():
        out = task(x[None].to(next(task.parameters()).device))[0].float().cpu().numpy()
    return target_norm.revert(out)
