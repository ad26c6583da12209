"""Caption exports: how they are told apart, read, and turned into word ids."""

from __future__ import annotations

from pathlib import Path

from geotrain.dlpk.prf.geotrain_networks import BOS, EOS, PAD, UNK
from geotrain.training.captions import Vocabulary, words_of
from geotrain.training.data.export import data_kind, read_export
from geotrain.training.data.readers import reader_for
from tests import formats


def test_a_multilabeled_export_with_the_caption_field_is_read_as_captions_with_their_commas(tmp_path: Path) -> None:
    export = read_export(formats.captions(tmp_path / "captions", chips=4))
    assert export.label_field == "Caption" and export.classes == []
    assert data_kind(export) == "ImageCaptioning"
    reader = reader_for(export)
    first = next(item for item in export.items if item.image.stem == "000000000000")
    image, captions = reader.load(first)
    assert image.shape == (3, 32, 32)
    # chip 0 has two captions; commas stay in the text
    assert captions == ["a red field, beside a narrow road", "red crops by a road"]
    # the same format without the caption field is a class export
    classes = read_export(formats.labeled_tiles(tmp_path / "classes", multi=True))
    assert data_kind(classes) == "MultiLabeled_Tiles"


def test_the_vocabulary_lists_training_words_by_frequency_and_encodes_unknown_words_as_unk() -> None:
    assert words_of("A red field, beside the road's edge!") == ["a", "red", "field", "beside", "the", "road's", "edge"]
    vocabulary = Vocabulary.of(["a red road", "a green road", "a pond"])
    assert vocabulary.words == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "road", "green", "pond", "red"]
    ids = vocabulary.encode("A red lake", steps=6).tolist()
    index = vocabulary.index
    assert ids == [BOS, index["a"], index["red"], UNK, EOS, PAD, PAD]
    # a caption longer than the steps keeps room for its end
    assert vocabulary.encode("a red road a red road", steps=3).tolist() == [BOS, index["a"], index["red"], EOS]


def test_a_fine_tuned_vocabulary_keeps_the_packages_words_in_their_places_and_adds_new_ones_after() -> None:
    known = ["<pad>", "<bos>", "<eos>", "<unk>", "road", "a"]
    vocabulary = Vocabulary.of(["a wide road", "a river", "a river"], known)
    assert vocabulary.words == [*known, "river", "wide"]
    # a list that is not a geotrain vocabulary is not trusted
    assert Vocabulary.of(["a road"], ["road", "a"]).words == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "road"]


def test_a_tile_without_a_caption_is_read_with_none_rather_than_as_unreadable(tmp_path: Path) -> None:
    root = formats.captions(tmp_path / "captions", chips=4)
    (root / "labels" / "000000000003.xml").write_text("<annotation><filename>000000000003.tif</filename></annotation>")
    export = read_export(root)
    item = next(item for item in export.items if item.image.stem == "000000000003")
    image, captions = reader_for(export).load(item)
    assert captions == [] and image.shape == (3, 32, 32)
