"""The model types beyond the core zoo, through the HTTP API on small generated exports: each job succeeds,
and its package's own inference function (run apart from geotrain, as ArcGIS runs it) reads a chip as the
matching ArcGIS tool hands it over."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio

from geotrain.dlpk import verify
from geotrain.task import catalog
from tests.conftest import TASK, Server, arcgis_form, in_share, succeeded_package
from tests.exports import (
    ExportSpec,
    write_change_tiles,
    write_classified_tiles,
    write_edge_tiles,
    write_road_tiles,
    write_translation_tiles,
)


def _submit(client: httpx.Client, server: Server, **values: object) -> dict[str, object]:
    body: dict[str, object] = client.post(f"{server.url}{TASK}/submitJob", data=arcgis_form(**values)).json()
    return body


def _chip(folder: Path, stem: str = "000000000000") -> np.ndarray:
    with rasterio.open(folder / f"{stem}.tif") as src:
        pixels: np.ndarray = src.read()
    return pixels


SMALL_HD = {"n_blocks_global": "2", "n_gen_filters": "16", "n_downsample_global": "2", "n_dscr_filters": "16"}
# model type -> (export folder, backbone, monitor, arguments) of the jobs the tests below look at
JOBS: dict[str, tuple[str, str | None, str, dict[str, str]]] = {
    "CHANGEDETECTOR": ("change", None, "F1_SCORE", {"attention_type": "PAM"}),
    "HED_EDGEDETECTOR": ("edges", "VGG11", "F1_SCORE", {}),
    "BDCN_EDGEDETECTOR": ("edges", "RESNET18", "F1_SCORE", {}),
    "SUPERRESOLUTION": ("single", "RESNET18", "VALID_LOSS", {"downsample_factor": "2"}),
    "PIX2PIX": ("paired", "RESNET18", "VALID_LOSS", {}),
    "PIX2PIXHD": (
        "paired", None, "VALID_LOSS",
        {**SMALL_HD, "n_dscr": "2", "feat_loss": "True", "vgg_loss": "True", "gen_network": "local",
         "n_blocks_local": "1"},
    ),
    "CYCLEGAN": ("unpaired", None, "VALID_LOSS", {"gen_blocks": "2", "lsgan": "True"}),
    "MULTITASK_ROADEXTRACTOR": ("roads", "RESNET18", "DICE", {"orient_bin_size": "30", "mtl_model": "linknet"}),
    "CONNECTNET": ("roads", "RESNET18", "DICE", {"orient_bin_size": "30"}),
    "DEEPSORT": ("identities", "REID_V1", "ACCURACY", {}),
    "MAXDEEPLAB": ("panoptic", "RESNET18", "VALID_LOSS", {"n_masks": "10"}),
    "DETREG": ("voc", "RESNET18", "AVERAGE_PRECISION", {"queries": "20"}),
    # arguments as arcgis.learn's monitor spells it; small windows for a quick CPU job
    "SIAMMASK": ("tracks", "RESNET18", "VALID_LOSS", {"exemplar_size": "32", "instance_size": "64", "monitor": "mIOU"}),
    # decode_params as Pro's value table passes it: a dictionary's text
    "IMAGECAPTIONER": (
        "captions", "RESNET18", "CORPUS_BLEU",
        {"decode_params": "{'embed_size': 32, 'hidden_size': 32, 'attention_size': 16, 'teacher_forcing': 0.8}"},
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def queued(server: Server) -> dict[str, str]:
    """Every job of JOBS submitted at once, so that the worker trains one while a test runs the package of
    another through its function: model type -> job id."""
    from tests import formats

    store = Path(server.stores["/fileShares/chips"])
    # change: 3-band 8-bit, the two dates RGB twice (ImageNet statistics for each), class values 2 and 5
    write_change_tiles(store / "change", ExportSpec(chips=6, bands=3, dtype="uint8", values=(2, 5), absent=None))
    # edges: 4-band 16-bit chips whose labels hold class value 6 on the outlines of what the images show
    write_edge_tiles(store / "edges", ExportSpec(chips=6, values=(6,), absent=None, seed=5))
    # single: 4-band 16-bit chips alone; paired: 3-band 8-bit chips and their 1-band renderings
    write_translation_tiles(store / "single", ExportSpec(chips=6, seed=6), second=False)
    write_translation_tiles(store / "paired", ExportSpec(chips=6, bands=3, dtype="uint8"), second=True)
    formats.cyclegan(store / "unpaired")  # A/ and B/ of 3-band chips
    formats.captions(store / "captions")  # MultiLabeled_Tiles with the caption field: 3-band chips, 1-2 captions
    formats.identities(store / "identities")  # Imagenet crops of three tracked objects, four each
    formats.panoptic(store / "panoptic", chips=6)  # stuff class 5, things of class 1 (Palm) in labels2/Palm/
    formats.pascal_voc(store / "voc", chips=6, size=48)  # RGB JPEG chips, boxes of classes 1 and 2
    formats.tracks(store / "tracks", frames=6)  # RCNN_Masks of video frames: two cars and a boat, same ids throughout
    # roads: 3-band 8-bit chips with two straight roads each, class value 4
    write_road_tiles(store / "roads", ExportSpec(chips=6, bands=3, dtype="uint8", values=(4,), absent=None, seed=7))
    ids = {}
    with httpx.Client(timeout=30) as client:
        for model_type, (folder, backbone, monitor, arguments) in JOBS.items():
            body = _submit(
                client, server, in_folder=f"/fileShares/chips/{folder}", output_name=in_share(model_type.lower()),
                model_type=model_type, backbone_model=backbone, max_epochs=1, learning_rate=0.003, batch_size=8,
                monitor=monitor, arguments=arguments,
            )  # fmt: skip
            assert "jobId" in body, body
            ids[model_type] = str(body["jobId"])
    return ids


def _messages(client: httpx.Client, server: Server, job_id: str) -> list[str]:
    return [m["description"] for m in client.get(f"{server.url}/jobs/{job_id}?f=json").json()["messages"]]


@dataclass
class Trained:
    emd: dict[str, Any]
    messages: list[str]
    # updatePixels' output for a chip of the export, or vectorize's features for blocks of it, from the
    # package's own function
    output: Any


def _function_input(store: Path, model_type: str) -> np.ndarray | list[np.ndarray] | verify.Frames:
    """A chip as the ArcGIS tool hands it to the package's function."""
    folder = store / JOBS[model_type][0]
    if model_type == "SIAMMASK":
        # a tracker: three frames, and the first car's box in the first (x, y, width, height)
        return verify.Frames([_chip(folder / "images", f"{i:09d}") for i in range(3)], [[4.0, 6.0, 11.0, 8.0]])
    if model_type == "DEEPSORT":
        # Track Objects hands the re-identification network one crop per detected object
        return [
            _chip(folder / "images" / "2", "000000000004"),
            _chip(folder / "images" / "3", "000000000009")[:, 2:30, :20],
        ]
    if model_type == "IMAGECAPTIONER":
        # Classify Objects Using Deep Learning: a block per feature, of the feature's size
        chip = _chip(folder / "images")
        return [chip, np.ascontiguousarray(_chip(folder / "images", "000000000001")[:, 3:23, 5:29])]
    if model_type == "CHANGEDETECTOR":
        # Detect Change Using Deep Learning: the earlier raster's bands, then the later one's
        return np.concatenate([_chip(folder / "images"), _chip(folder / "images2")])
    if model_type == "DETREG":
        with rasterio.open(folder / "images" / "000000000000.jpg") as src:
            jpeg: np.ndarray = src.read()
        return jpeg
    return _chip(folder / ("A/images" if model_type == "CYCLEGAN" else "images"))


@pytest.fixture(scope="module")
def trained(server: Server, queued: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    """Every queued job waited for, its package downloaded from the job page's link and run through its own
    inference function: all of them in one interpreter that cannot import geotrain (one ArcGIS session)."""
    folder = tmp_path_factory.mktemp("packages")
    store = Path(server.stores["/fileShares/chips"])
    found: dict[str, tuple[dict[str, Any], list[str]]] = {}
    runs = []
    with httpx.Client(timeout=30) as client:
        for model_type, job_id in queued.items():
            package, emd = succeeded_package(client, server, job_id, folder)
            found[model_type] = emd, _messages(client, server, job_id)
            (folder / model_type).mkdir()
            runs.append((package, _function_input(store, model_type), folder / model_type))
    outputs = verify.run_functions(runs)
    return {m: Trained(*found[m], output) for m, output in zip(queued, outputs, strict=True)}


def test_changedetector_trains_and_its_function_classifies_the_two_dates_stacked(trained: dict[str, Trained]) -> None:
    emd, output = trained["CHANGEDETECTOR"].emd, trained["CHANGEDETECTOR"].output
    assert emd["ModelName"] == "ChangeDetector" and emd["ModelConfiguration"] == "geotrain.changedetector"
    assert emd["ExtractBands"] == [0, 1, 2, 3, 4, 5] and emd["IsImageNetNormalization"] is True
    assert [c["Value"] for c in emd["Classes"]] == [2, 5]
    assert {"precision", "recall", "f1", "monitored_f1_score"} <= set(emd)
    assert emd["ModelParameters"]["attention_type"] == "PAM"
    assert output.shape == (1, 32, 32) and set(np.unique(output)) <= {0, 2, 5}


@pytest.mark.parametrize("model_type", ["HED_EDGEDETECTOR", "BDCN_EDGEDETECTOR"])
def test_edge_detectors_train_and_their_function_draws_edges(trained: dict[str, Trained], model_type: str) -> None:
    emd, messages, output = trained[model_type].emd, trained[model_type].messages, trained[model_type].output
    assert emd["ModelType"] == "ImageClassification" and {"f1_score", "monitored_f1_score"} <= set(emd)
    assert emd["Classes"] == [{"Value": 1, "Name": "Class 6", "Color": [255, 255, 255]}]
    assert any(m.startswith("Edges: ") and "of the labelled pixels" in m for m in messages)
    assert any("f1_score" in m for m in messages if m.startswith("Epoch 1/1"))
    assert output.shape == (1, 32, 32) and set(np.unique(output)) <= {0, 1}


def test_changedetector_without_a_later_image_is_refused_at_submit_naming_images2(
    server: Server, client: httpx.Client
) -> None:
    root = Path(server.stores["/fileShares/chips"]) / "no_images2"
    write_classified_tiles(root, ExportSpec(chips=3))
    body = _submit(
        client, server, in_folder="/fileShares/chips/no_images2", output_name=in_share("nochange"),
        model_type="CHANGEDETECTOR",
    )  # fmt: skip
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == 400, body
    text = " ".join(error["details"])
    assert "in_folder" in text and "images2/" in text and "CHANGEDETECTOR" in text


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [({"attention_type": "XAM"}, "'PAM'"), ({"monitor": "average_precision"}, "valid_loss, precision, recall or f1")],
)
def test_changedetector_arguments_are_checked_at_submit(
    server: Server, client: httpx.Client, arguments: dict[str, str], expected: str
) -> None:
    body = _submit(
        client, server, in_folder="/fileShares/chips/uint16_4band", output_name=in_share("nochange"),
        model_type="CHANGEDETECTOR", arguments=arguments,
    )  # fmt: skip
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == 400, body
    assert "arguments" in " ".join(error["details"]) and expected in " ".join(error["details"])


@pytest.mark.parametrize("model_type", [m for m in catalog.ALL_MODEL_TYPES if m not in catalog.BUILT])
def test_a_model_type_not_trained_here_is_refused_at_submit_naming_it_and_why(
    server: Server, client: httpx.Client, model_type: str
) -> None:
    body = _submit(
        client, server, in_folder="/fileShares/chips/uint16_4band", output_name=in_share("refused"),
        model_type=model_type,
    )  # fmt: skip
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == 400, body
    text = " ".join(error["details"])
    assert f"'{model_type}'" in text and "model_type" in text
    if model_type in catalog.REFUSED:
        assert "cannot be trained by this server" in text and "mmcv" in text
    else:
        assert "does not train yet" in text and "CHANGEDETECTOR" in text  # and what it does train


@pytest.mark.parametrize(
    ("model_type", "bands_out"), [("SUPERRESOLUTION", 4), ("PIX2PIX", 1), ("PIX2PIXHD", 1), ("CYCLEGAN", 3)]
)
def test_translators_train_and_their_function_gives_the_translated_image(
    trained: dict[str, Trained], model_type: str, bands_out: int
) -> None:
    emd, messages, output = trained[model_type].emd, trained[model_type].messages, trained[model_type].output
    assert emd["ModelType"] == emd["ModelName"] and emd["InferenceFunction"] == "GeotrainImageTranslator.py"
    assert emd["ModelParameters"]["out_channels"] == bands_out
    assert float(emd["psnr"]) > 0 and 0 < float(emd["ssim"]) <= 1
    if model_type == "SUPERRESOLUTION":
        assert emd["downsample_factor"] == 2
    assert any("psnr" in m and "ssim" in m for m in messages if m.startswith("Epoch 1/1"))
    if model_type == "PIX2PIXHD":
        assert any(
            m.startswith(
                "Generator: pix2pixHD's global generator (2 times down, 2 residual blocks, 32 filters first) on"
            )
            and "1 local enhancer(s) of 1 residual blocks" in m
            for m in messages
        )
        assert emd["ModelParameters"]["local_enhancers"] == 1
        assert any(m.startswith("vgg_loss: ") for m in messages)
    assert output.shape == (bands_out, 32, 32) and output.dtype == np.float32 and np.isfinite(output).all()


@pytest.mark.parametrize("model_type", ["MULTITASK_ROADEXTRACTOR", "CONNECTNET"])
def test_road_extractors_train_and_their_function_classifies_road_pixels(
    trained: dict[str, Trained], model_type: str
) -> None:
    emd, messages, output = trained[model_type].emd, trained[model_type].messages, trained[model_type].output
    # CONNECTNET's job names no mtl_model: arcgis.learn's default, the stacked hourglass (its backbone unused)
    hourglass = model_type == "CONNECTNET"
    assert emd["ModelParameters"]["mtl_model"] == ("hourglass" if hourglass else "linknet")
    said = "two stacked hourglasses" if hourglass else "a LinkNet-style U-Net on RESNET18"
    assert any(m.startswith(f"Road extraction: {said}") for m in messages), messages
    assert emd["ModelParameters"]["aux_channels"] == (7 if model_type == "MULTITASK_ROADEXTRACTOR" else 8)  # 6 bins
    assert "monitored_dice" in emd
    assert any("dice" in m for m in messages if m.startswith("Epoch 1/1"))
    assert output.shape == (1, 32, 32) and set(np.unique(output)) <= {0, 4}


def test_an_mtl_model_other_than_hourglass_or_linknet_is_refused_at_submit(
    server: Server, client: httpx.Client
) -> None:
    body = _submit(
        client, server, in_folder="/fileShares/chips/uint16_4band", output_name=in_share("hourglass"),
        model_type="MULTITASK_ROADEXTRACTOR", arguments={"mtl_model": "stacked"},
    )  # fmt: skip
    error = body["error"]
    assert isinstance(error, dict) and "'hourglass' (stacked hourglasses" in " ".join(error["details"])


def test_imagecaptioner_trains_and_its_function_captions_each_object_in_words_of_its_vocabulary(
    trained: dict[str, Trained],
) -> None:
    emd, messages, features = trained["IMAGECAPTIONER"].emd, trained["IMAGECAPTIONER"].messages, trained[
        "IMAGECAPTIONER"
    ].output  # fmt: skip
    assert emd["ModelType"] == emd["ModelName"] == "ImageCaptioner"
    assert emd["InferenceFunction"] == "GeotrainImageCaptioner.py" and emd["SingleLabelFieldFound"] == "Caption"
    words = emd["Vocabulary"]
    assert words[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and {"red", "road", "pond", "trees"} <= set(words)
    assert "," not in words  # punctuation is not a word; the commas inside captions were read as text
    parameters = emd["ModelParameters"]
    assert (parameters["embed_size"], parameters["hidden_size"], parameters["attention_size"]) == (32, 32, 16)
    assert parameters["teacher_forcing"] == 0.8 and parameters["max_words"] == 7  # "a red field, beside a narrow road"
    assert 0 <= float(emd["corpus_bleu"]) <= 1 and 0 <= float(emd["accuracy"]) <= 1 and "monitored_corpus_bleu" in emd
    assert any(m.startswith("Captions: ") and "words in the vocabulary" in m for m in messages)
    assert any("corpus_bleu" in m for m in messages if m.startswith("Epoch 1/1"))
    assert len(features) == 2
    for feature in features:
        attributes = feature["attributes"]
        assert attributes["Class"] == attributes["Label"] and isinstance(attributes["Class"], str)
        assert set(attributes["Class"].split()) <= set(words[4:]) and 0 < attributes["Confidence"] <= 100
    assert features[1]["geometry"]["rings"][0][2] == [24.0, 20.0]  # the block's own size


def test_a_caption_export_is_refused_for_the_feature_classifier_and_pretrained_embeddings_are_refused(
    server: Server, client: httpx.Client, queued: dict[str, str]
) -> None:
    """``queued`` wrote the caption export."""
    body = _submit(
        client, server, in_folder="/fileShares/chips/captions", output_name=in_share("notclasses"),
        model_type="FEATURE_CLASSIFIER",
    )  # fmt: skip
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == 400, body
    assert "labelled with classes (a caption export trains IMAGECAPTIONER)" in " ".join(error["details"])
    body = _submit(
        client, server, in_folder="/fileShares/chips/captions", output_name=in_share("embeddings"),
        model_type="IMAGECAPTIONER", arguments={"decode_params": "{'pretrained_emb': True}"},
    )  # fmt: skip
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == 400, body
    assert "'decode_params'" in " ".join(error["details"]) and "cannot be downloaded here" in " ".join(error["details"])


def test_deepsort_trains_its_reid_network_and_its_function_gives_each_crop_an_identity_and_a_descriptor(
    trained: dict[str, Trained],
) -> None:
    emd, messages, features = trained["DEEPSORT"].emd, trained["DEEPSORT"].messages, trained["DEEPSORT"].output
    assert (emd["ModelType"], emd["ModelName"]) == ("ObjectTracking", "DeepSort")
    assert emd["InferenceFunction"] == "GeotrainObjectClassifier.py" and emd["ModelParameters"]["backbone"] == "reid_v1"
    assert [c["Name"] for c in emd["Classes"]] == ["car 1", "car 2", "truck 7"] and emd["EmbeddingSize"] == 128
    assert any("re-identification network starts from random initialisation" in m for m in messages)
    assert len(features) == 2
    descriptors = []
    for feature in features:
        attributes = feature["attributes"]
        assert attributes["Class"] in ("car 1", "car 2", "truck 7") and 0 < attributes["Confidence"] <= 100
        descriptors.append(np.array([float(v) for v in attributes["Embedding"].split(",")]))
    assert all(d.shape == (128,) and abs(np.linalg.norm(d) - 1) < 1e-3 for d in descriptors)


def test_maxdeeplab_trains_and_its_function_gives_class_values_and_segment_numbers(trained: dict[str, Trained]) -> None:
    emd, messages, output = trained["MAXDEEPLAB"].emd, trained["MAXDEEPLAB"].messages, trained["MAXDEEPLAB"].output
    assert (emd["ModelType"], emd["ModelName"]) == ("PanopticSegmenter", "MaXDeepLab")
    assert emd["InferenceFunction"] == "GeotrainPanopticSegmenter.py" and emd["ModelParameters"]["n_masks"] == 10
    assert emd["Panoptic_Segmentation_Instance_Classes"] == [{"Value": 1, "Name": "Palm"}]
    assert 0 <= float(emd["panoptic_quality"]) <= 1
    assert any(m.startswith("Panoptic segments: instances of Palm") for m in messages)
    assert any("panoptic_quality" in m for m in messages if m.startswith("Epoch 1/1"))
    # band 1: class values (0 where no segment claims a pixel); band 2: segment numbers, one per query at most
    assert output.shape == (2, 32, 32) and set(np.unique(output[0])) <= {0, 1, 5}
    assert output[1].min() >= 0 and output[1].max() <= 10


def test_detreg_trains_a_detection_transformer_and_its_function_gives_boxes(trained: dict[str, Trained]) -> None:
    emd, messages, features = trained["DETREG"].emd, trained["DETREG"].messages, trained["DETREG"].output
    assert (emd["ModelType"], emd["ModelName"]) == ("ObjectDetection", "DETReg")
    assert emd["InferenceFunction"] == "GeotrainObjectDetector.py" and emd["ModelParameters"]["queries"] == 20
    assert emd["ModelParameters"]["input_size"] % 32 == 0 and "average_precision_score" in emd
    assert any("average_precision" in m for m in messages if m.startswith("Epoch 1/1"))
    assert len(features) <= 20  # a box per query at most
    for feature in features:
        assert (
            feature["attributes"]["Class"] in {c["Name"] for c in emd["Classes"]}
            and 0 < feature["attributes"]["Confidence"] <= 100
        )
        ring = feature["geometry"]["rings"][0]
        assert all(0 <= x <= 48 and 0 <= y <= 48 for x, y in ring)


def test_siammask_trains_a_tracker_and_its_package_follows_an_object_through_frames(
    trained: dict[str, Trained],
) -> None:
    emd, messages, frames = trained["SIAMMASK"].emd, trained["SIAMMASK"].messages, trained["SIAMMASK"].output
    assert emd["ModelType"] == "ObjectTracking" and emd["ModelName"] == "SiamMask"
    assert emd["InferenceFunction"] == "GeotrainObjectTracker.py"
    params = emd["ModelParameters"]
    assert (params["exemplar_size"], params["instance_size"], params["backbone"]) == (32, 64, "resnet18")
    assert emd["ImageHeight"] == 32 and {"mean_IOU", "monitored_miou"} <= set(emd)
    assert [c["Name"] for c in emd["Classes"]] == ["Car", "Boat"]
    assert any(m.startswith("Tracking: 2 tracks") for m in messages)
    assert any("miou" in m and "box_iou" in m for m in messages if m.startswith("Epoch 1/1"))
    # one track, started on the first frame's box, found again in each later frame with a mask of the frame's size
    assert len(frames) == 3 and [t["bbox"] for t in frames[0]] == [[4.0, 6.0, 11.0, 8.0]]
    for later in frames[1:]:
        (track,) = later
        assert track["id"] == 0 and len(track["bbox"]) == 4 and 0 <= track["score"] <= 1
        assert track["mask"].shape == (48, 48) and track["mask"].dtype == bool
