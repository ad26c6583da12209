"""Image captioning (IMAGECAPTIONER) on MultiLabeled_Tiles exported with a caption field.

Each chip's label file holds one caption or several (every ``<object><name>``). The vocabulary is the training
captions' words; a ResNet encoder and an attention LSTM decoder (``geotrain_networks.CaptionNet``) learn the
next word with teacher forcing. Validation scores the loss, the next-word accuracy and corpus BLEU-4 of greedy
captions against every reference caption of the chip.
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchmetrics.aggregation import SumMetric
from torchmetrics.text import BLEUScore

from geotrain.dlpk import emd as emd_writer
from geotrain.dlpk import pictures
from geotrain.dlpk.prf.geotrain_networks import BOS, EOS, PAD, SPECIAL_WORDS, UNK, CaptionNet, describe_captions
from geotrain.errors import TrainingError
from geotrain.task.catalog import DECODE_DEFAULTS
from geotrain.training.data.readers import reader_for
from geotrain.training.data.scan import Scan, scan
from geotrain.training.fit import OneCycleTask, freeze_except
from geotrain.training.job import Job
from geotrain.training.models.registry import with_weights

# captions longer than this many words are cut (arcgis.learn's exports hold a sentence or two)
MAX_WORDS = 40


def words_of(text: str) -> list[str]:
    """A caption's words: lower case, punctuation dropped, contractions kept whole."""
    return re.findall(r"\w+(?:'\w+)?", text.lower())


@dataclass(frozen=True)
class Vocabulary:
    words: list[str]  # the special words first, then the training captions' words, most frequent first

    @classmethod
    def of(cls, captions: Sequence[str], known: Sequence[str] = ()) -> Vocabulary:
        """``known``: a fine-tuned package's words, kept at their places (its word layers still mean them),
        the captions' new words after them."""
        counts = Counter(w for caption in captions for w in words_of(caption))
        start = list(known) if list(known[: len(SPECIAL_WORDS)]) == list(SPECIAL_WORDS) else list(SPECIAL_WORDS)
        seen = set(start)
        return cls([*start, *sorted((w for w in counts if w not in seen), key=lambda w: (-counts[w], w))])

    @cached_property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, caption: str, steps: int) -> torch.Tensor:
        """<bos> the words <eos>, padded to ``steps`` + 1 ids; words it has never seen are <unk>."""
        index = self.index
        ids = [BOS, *(index.get(w, UNK) for w in words_of(caption)[: steps - 1]), EOS]
        return torch.tensor(ids + [PAD] * (steps + 1 - len(ids)), dtype=torch.long)


class CaptionChips(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """Chips resized to one size and flipped or turned in training, each with one of its captions as word ids
    (a random one in training, the first in validation) and its position, to find all its captions."""

    def __init__(
        self, scanned: Scan[Any], indices: Sequence[int], size: int, augment: bool, vocabulary: Vocabulary, steps: int
    ) -> None:
        self.scanned, self.indices, self.size, self.augment = scanned, list(indices), size, augment
        self.vocabulary, self.steps = vocabulary, steps

    def __len__(self) -> int:
        return len(self.indices)

    def captions(self, i: int) -> list[str]:
        captions: list[str] = self.scanned.sample(self.indices[i])[1]
        return captions

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, captions = self.scanned.sample(self.indices[i])
        x = torch.from_numpy(self.scanned.normalization.apply(image))
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        chosen = captions[0]
        if self.augment:
            flip, turns, pick = (int(v) for v in torch.randint(0, 4 * len(captions), (3,)))
            x = torch.rot90(x.flip(-1) if flip % 2 else x, turns % 4, (-2, -1))
            chosen = captions[pick % len(captions)]
        return x.contiguous(), self.vocabulary.encode(chosen, self.steps), i


@dataclass
class CaptionMetrics:
    accuracy: float  # of the next word, given the true caption so far (padding not counted)
    bleu: float  # corpus BLEU-4 of the greedy captions against every caption of each chip


class CaptionTask(OneCycleTask):
    network: CaptionNet

    def __init__(
        self, network: CaptionNet, vocabulary: Vocabulary, references: list[list[str]], steps: int, lr: float,
        freeze: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        self.network, self.vocabulary, self.references = network, vocabulary, references
        self.steps, self.lr, self.channels_last = steps, lr, True
        if freeze:
            freeze_except(network.encoder)
        self.right, self.counted = SumMetric(), SumMetric()
        self.bleu = BLEUScore(n_gram=4)
        self.last_metrics: CaptionMetrics | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Greedy captions' word ids (the network's training call takes the captions too)."""
        return self.network.caption(x, self.steps)[0]

    def _logits(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(x, tokens).float()
        return logits, tokens[:, 1:]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, tokens, _ = batch
        logits, wanted = self._logits(x, tokens)
        loss = F.cross_entropy(logits.flatten(0, 1), wanted.flatten(), ignore_index=PAD)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        for metric in (self.right, self.counted, self.bleu):
            metric.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, tokens, positions = batch
        logits, wanted = self._logits(x, tokens)
        loss = F.cross_entropy(logits.flatten(0, 1), wanted.flatten(), ignore_index=PAD)
        self.log("valid_loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        real = wanted != PAD
        self.right.update((logits.argmax(-1) == wanted)[real].sum().float())
        self.counted.update(real.sum().float())
        made = [text for text, _ in describe_captions(self.network, x, self.steps, self.vocabulary.words)]
        self.bleu.update(made, [[" ".join(words_of(c)) for c in self.references[int(p)]] for p in positions])

    def on_validation_epoch_end(self) -> None:
        counted = float(self.counted.compute())
        self.last_metrics = CaptionMetrics(float(self.right.compute()) / max(counted, 1.0), float(self.bleu.compute()))
        self.log("accuracy", self.last_metrics.accuracy)
        self.log("corpus_bleu", self.last_metrics.bleu)


def decoder_settings(arguments: dict[str, Any]) -> dict[str, Any]:
    """arcgis.learn's decoder settings (``decode_params``, or ``decoder_params`` as arcgis.learn spells it)
    over their defaults."""
    given = arguments.get("decode_params", arguments.get("decoder_params")) or {}
    return {**DECODE_DEFAULTS, **given}


def train(job: Job) -> None:
    params, export, progress = job.params, job.export, job.progress
    scanned = job.checked(scan(export, reader_for(export).load, job.reading))
    captioned = [bool(scanned.sample(i)[1]) for i in range(len(scanned.items))]
    if not any(captioned):
        raise TrainingError("No chip of the export has a caption.", ["Export the chips with the caption field."])
    if not all(captioned):
        progress.warn(f"{captioned.count(False)} chip(s) without a caption (tiles with no feature) are left out.")
    train_idx, valid_idx = ([i for i in part if captioned[i]] for part in job.split(scanned))
    if not train_idx or not valid_idx:
        raise TrainingError(
            f"{captioned.count(True)} captioned chip(s) cannot be split into training and validation.",
            ["Export more captioned chips, or change validation_percent."],
        )
    train_captions = [c for i in train_idx for c in scanned.sample(i)[1]]
    known = [str(w) for w in job.pretrained.emd.get("Vocabulary", [])] if job.pretrained is not None else []
    vocabulary = Vocabulary.of(train_captions, known)
    if known:
        added = len(vocabulary.words) - len(known)
        progress.info(
            f"Fine-tuning keeps the package's {len(known) - len(SPECIAL_WORDS)} words in their places"
            + (f" and adds {added} new ones (the word layers then start afresh)." if added else ".")
        )
    if len(vocabulary.words) == len(SPECIAL_WORDS):
        raise TrainingError("The training chips' captions hold no words.", ["Export captions with text in them."])
    steps = min(MAX_WORDS, max(len(words_of(c)) for c in train_captions)) + 1  # and the end
    progress.info(
        f"Captions: {len(train_captions)} in training, {len(vocabulary.words) - len(SPECIAL_WORDS)} words in the "
        f"vocabulary, up to {steps - 1} words a caption."
    )
    size = job.chip_size(scanned)
    augment = job.flips_and_turns("captioned chips")
    train_set = CaptionChips(scanned, train_idx, size, augment, vocabulary, steps)
    valid_set = CaptionChips(scanned, valid_idx, size, False, vocabulary, steps)

    decoder = decoder_settings(params.arguments)
    network = CaptionNet(
        params.backbone.lower(), scanned.num_bands, len(vocabulary.words), int(decoder["embed_size"]),
        int(decoder["hidden_size"]), int(decoder["attention_size"]), float(decoder["dropout"]),
        float(decoder["teacher_forcing"]),
    )  # fmt: skip
    built = with_weights(
        network, network.encoder, params.backbone.lower(), scanned.num_bands, params.weight_init_scheme
    )
    freeze = job.announce_model(network, built.notes, built.pretrained_from is not None)
    references = [valid_set.captions(i) for i in range(len(valid_set))]
    task = CaptionTask(network, vocabulary, references, steps, params.learning_rate or 1e-3, freeze)
    result = job.fit(task, train_set, valid_set, scanned)
    if not job.leader:
        return  # the package is rank 0's to write

    m: CaptionMetrics = result.metrics
    emd = job.model_emd("ImageCaptioner", "ImageCaptioner", scanned, size, result)
    emd["ModelParameters"].update(
        {k: decoder[k] for k in ("embed_size", "hidden_size", "attention_size", "dropout", "teacher_forcing")}
    )
    emd["ModelParameters"]["max_words"] = steps - 1
    emd.update(
        {
            "Vocabulary": vocabulary.words,
            "accuracy": emd_writer.metric_text(m.accuracy),
            "corpus_bleu": emd_writer.metric_text(m.bleu),
            "MetaDataMode": export.metadata_format,
            "SingleLabelFieldFound": export.label_field,
            "IsMultiLabel": False,
        }
    )
    blocks, expected = _package_check(task, scanned, valid_idx, size)
    job.write_package(
        emd,
        network.state_dict(),
        result,
        _show_results(valid_set, expected),
        [
            ("Model", "ImageCaptioner"),
            ("Backbone", params.backbone.lower()),
            ("Learning rate", f"{result.lr:.4e}"),
            ("Next-word accuracy", f"{m.accuracy:.4f}"),
            ("Corpus BLEU-4", f"{m.bleu:.4f}"),
            ("Epochs", str(len(result.history))),
        ],
        {},
        f"next-word accuracy {m.accuracy:.4f}, corpus BLEU-4 {m.bleu:.4f}",
    )
    job.check_classifier(blocks, [(caption, str(confidence)) for caption, confidence in expected])


def _package_check(
    task: CaptionTask, scanned: Scan[Any], indices: Sequence[int], size: int
) -> tuple[list[np.ndarray], list[tuple[str, float]]]:
    """Up to eight validation chips' raw pixels and the trained model's (caption, confidence) for each, made
    as the inference function makes them."""
    chosen = list(indices[:8])
    chips = CaptionChips(scanned, chosen, size, False, task.vocabulary, task.steps)
    task.eval()
    device = next(task.parameters()).device
    batch = torch.stack([chips[j][0] for j in range(len(chosen))]).to(device)
    expected = describe_captions(task.network, batch, task.steps, task.vocabulary.words)
    return [np.ascontiguousarray(scanned.sample(i)[0]) for i in chosen], expected


def _show_results(valid_set: CaptionChips, expected: list[tuple[str, float]]) -> bytes:
    images, truths, found = [], [], []
    for i, (caption, _) in enumerate(expected[:4]):
        images.append(valid_set[i][0].numpy())
        truths.append(textwrap.fill(valid_set.captions(i)[0], 28))
        found.append(textwrap.fill(caption, 28))
    return pictures.classification_results(images, truths, found)
