"""Fine-tuning starts from the package's weights: its first epoch is far better than a fresh start's."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import in_share_json
from tests.exports import ExportSpec, write_classified_tiles
from tests.integration.test_train_shapes import _train

FORM = {"in_folder": "/fileShares/c/rgb", "model_type": "UNET", "backbone_model": "RESNET18",
        "learning_rate": "0.003", "batch_size": "4", "stop_training": "false", "freeze_model": "false"}  # fmt: skip


def _first_train_loss(messages: list[str]) -> float:
    match = next(re.match(r"Epoch 1/\d+: train_loss ([0-9.]+)", m) for m in messages if m.startswith("Epoch 1/"))
    assert match is not None
    return float(match.group(1))


def test_fine_tuning_starts_where_the_package_left_off(tmp_path: Path) -> None:
    spec = ExportSpec(chips=16, size=32, bands=3, dtype="uint8", values=(1, 2), absent=None)
    write_classified_tiles(tmp_path / "chips" / "rgb", spec)
    _train(tmp_path, {**FORM, "output_name": in_share_json("first"), "max_epochs": "6"})
    _, fresh = _train(tmp_path, {**FORM, "output_name": in_share_json("fresh"), "max_epochs": "1"})
    package = "/fileShares/geotrain/models/first/first.dlpk"
    _, tuned = _train(
        tmp_path,
        {
            **FORM,
            "output_name": in_share_json("tuned"),
            "max_epochs": "1",
            "pretrained_model": f'{{"uri": "{package}"}}',
        },
    )
    assert any(m.startswith(f"Fine-tuning from '{package}'") for m in tuned)
    assert _first_train_loss(tuned) < 0.6 * _first_train_loss(fresh), (tuned, fresh)


def test_a_captioner_fine_tuned_on_new_captions_keeps_the_packages_words_and_adds_the_new_ones(tmp_path: Path) -> None:
    from tests import formats

    formats.captions(tmp_path / "chips" / "captions", chips=6)
    form = {"in_folder": "/fileShares/c/captions", "model_type": "IMAGECAPTIONER", "backbone_model": "RESNET18",
            "learning_rate": "0.003", "max_epochs": "1"}  # fmt: skip
    first, _ = _train(tmp_path, {**form, "output_name": in_share_json("captioner")})
    # the same chips captioned anew: one caption changes its words
    label = tmp_path / "chips" / "captions" / "labels" / "000000000001.xml"
    label.write_text(label.read_text().replace("dense green trees around a pond", "tall green reeds around a pond"))
    package = "/fileShares/geotrain/models/captioner/captioner.dlpk"
    tuned, messages = _train(
        tmp_path, {**form, "output_name": in_share_json("tuned"), "pretrained_model": f'{{"uri": "{package}"}}'}
    )
    known = first["Vocabulary"]
    assert tuned["Vocabulary"][: len(known)] == known and {"tall", "reeds"} <= set(tuned["Vocabulary"][len(known) :])
    assert any(
        m.startswith(f"Fine-tuning keeps the package's {len(known) - 4} words in their places and adds")
        for m in messages
    )


def test_a_tracker_fine_tuned_keeps_the_packages_windows_and_loads_every_weight(tmp_path: Path) -> None:
    from tests import formats

    formats.tracks(tmp_path / "chips" / "tracks", frames=6)
    form = {"in_folder": "/fileShares/c/tracks", "model_type": "SIAMMASK", "backbone_model": "RESNET18",
            "learning_rate": "0.001", "max_epochs": "1"}  # fmt: skip
    _train(tmp_path, {**form, "output_name": in_share_json("tracker"), "arguments": '{"exemplar_size": "32"}'})
    package = "/fileShares/geotrain/models/tracker/tracker.dlpk"
    tuned, messages = _train(
        tmp_path, {**form, "output_name": in_share_json("tuned"), "pretrained_model": f'{{"uri": "{package}"}}'}
    )
    assert (tuned["ModelParameters"]["exemplar_size"], tuned["ModelParameters"]["instance_size"]) == (32, 65)
    (loaded,) = [m for m in messages if m.startswith(f"Fine-tuning from '{package}'")]
    assert "start afresh" not in loaded, loaded
