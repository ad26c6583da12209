"""The GP REST protocol as ArcGIS clients read it, and bad input answered with the error envelope."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from geotrain.task import catalog
from tests.conftest import TASK, Server, arcgis_form

GPSERVER = "/arcgis/rest/services/System/RasterAnalysisTools/GPServer"
GOOD = {"in_folder": "/fileShares/chips/uint16_4band", "output_name": {"name": "never_run"}, "model_type": "UNET"}


def test_service_resource_has_what_import_toolbox_reads(server: Server, client: httpx.Client) -> None:
    service = client.get(server.url + GPSERVER, params={"f": "json"}).json()
    assert service["tasks"] == ["TrainDeepLearningModel", "QueryDeepLearningModelInfo"]
    assert service["executionType"] == "esriExecutionTypeAsynchronous"
    assert service["resultMapServerName"] == "" and service["currentVersion"] >= 12.0


def test_task_declares_all_twenty_inputs_and_out_item_with_required_keys(server: Server, client: httpx.Client) -> None:
    task = client.post(server.url + TASK, data={"f": "json"}).json()
    assert task["name"] == "TrainDeepLearningModel" and task["executionType"] == "esriExecutionTypeAsynchronous"
    params = {p["name"]: p for p in task["parameters"]}
    inputs = [n for n, p in params.items() if p["direction"] == "esriGPParameterDirectionInput"]
    assert inputs == [
        "in_folder", "output_name", "model_type", "arguments", "batch_size", "max_epochs", "learning_rate",
        "backbone_model", "validation_percent", "pretrained_model", "stop_training", "freeze_model",
        "overwrite_model", "context", "data_augmentation", "augmentation_parameters", "chip_size", "resize_to",
        "weight_init_scheme", "monitor",
    ]  # fmt: skip
    for p in params.values():
        assert {"name", "dataType", "displayName", "direction", "defaultValue", "parameterType"} <= set(p)
    assert params["out_item"]["direction"] == "esriGPParameterDirectionOutput"
    assert params["out_item"]["parameterType"] == "esriGPParameterTypeDerived"
    assert "UNET" in params["model_type"]["choiceList"] and "RESNET34" in params["backbone_model"]["choiceList"]
    assert params["monitor"]["choiceList"][0] == "VALID_LOSS" and params["batch_size"]["defaultValue"] == 2
    for name in ("in_folder", "output_name", "model_type"):
        assert params[name]["parameterType"] == "esriGPParameterTypeRequired"


def test_pjson_and_html_formats_and_html_is_the_default(server: Server, client: httpx.Client) -> None:
    pretty = client.get(server.url + TASK, params={"f": "pjson"})
    assert pretty.headers["content-type"].startswith("application/json") and "\n  " in pretty.text
    page = client.get(server.url + TASK)
    assert page.headers["content-type"].startswith("text/html") and "<form" in page.text and "in_folder" in page.text


def test_submit_by_get_query_and_html_redirect_to_the_job_page(server: Server, client: httpx.Client) -> None:
    form = arcgis_form(**GOOD, max_epochs=1)
    form["f"] = "html"
    response = client.get(server.url + TASK + "/submitJob", params=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("jobs/j")
    page = client.get(server.url + TASK + "/" + response.headers["location"])
    assert page.headers["content-type"].startswith("text/html") and "Status: <b id='status'>" in page.text
    job_id = response.headers["location"].split("/")[1].split("?")[0]
    cancel = client.get(f"{server.url}{TASK}/jobs/{job_id}/cancel", params={"f": "json"}).json()
    assert cancel["jobId"] == job_id


def test_inputs_echo_the_parsed_values(server: Server, client: httpx.Client) -> None:
    form = arcgis_form(
        **GOOD, stop_training="FALSE", batch_size="4", arguments="class_balancing True;focal_loss 'False'"
    )
    job_id = client.post(server.url + TASK + "/submitJob", data=form).json()["jobId"]
    client.post(f"{server.url}/jobs/{job_id}/cancel", data={"f": "json"})
    base = f"{server.url}/TrainDeepLearningModel/jobs/{job_id}/inputs"
    assert client.get(f"{base}/stop_training", params={"f": "json"}).json()["value"] is False
    assert client.get(f"{base}/batch_size", params={"f": "json"}).json() == {
        "paramName": "batch_size", "dataType": "GPLong", "value": 4,
    }  # fmt: skip
    assert client.get(f"{base}/arguments", params={"f": "json"}).json()["value"] == {
        "class_balancing": True, "focal_loss": False,
    }  # fmt: skip
    assert client.get(f"{base}/output_name", params={"f": "json"}).json()["value"] == {"name": "never_run"}
    assert client.get(f"{base}/backbone_model", params={"f": "json"}).json()["value"] == "RESNET34"


def test_messages_can_be_left_out(server: Server, client: httpx.Client) -> None:
    job_id = client.post(server.url + TASK + "/submitJob", data=arcgis_form(**GOOD)).json()["jobId"]
    job = client.get(f"{server.url}/jobs/{job_id}", params={"f": "json", "returnMessages": "False"}).json()
    client.post(f"{server.url}/jobs/{job_id}/cancel", data={"f": "json"})
    assert "messages" not in job and job["jobId"] == job_id


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/j00000000000000000000000000000000",
        f"{TASK}/jobs/nope",
        f"{TASK}/jobs/nope/results/out_item",
        "/jobs/x/cancel",
    ],
)
def test_unknown_job_is_code_404_in_the_envelope(server: Server, client: httpx.Client, path: str) -> None:
    body = client.get(server.url + path, params={"f": "json"}).json()
    assert body["error"]["code"] == 404 and "does not exist" in body["error"]["message"]


def _error(client: httpx.Client, server: Server, **overrides: object) -> dict[str, object]:
    response = client.post(server.url + TASK + "/submitJob", data=arcgis_form(**{**GOOD, **overrides}))
    assert response.status_code == 200  # ArcGIS Server's way: the code is in the body
    body = response.json()
    assert "jobId" not in body, body
    error: dict[str, object] = body["error"]
    return error


BAD = [
    ("in_folder", ""),
    ("in_folder", "/fileShares/chips/missing_folder"),
    ("in_folder", "/fileShares/chips/../chips/uint16_4band"),
    ("in_folder", "/etc"),
    ("in_folder", "C:\\data\\chips"),
    ("in_folder", "\\\\fileserver\\share\\chips"),
    ("in_folder", "/fileShares/chips/uint16_4band\x00"),
    ("in_folder", "/fileShares/chips"),
    ("in_folder", '{"uri": 5}'),
    ("output_name", ""),
    ("output_name", '{"name": "../escape"}'),
    ("output_name", '{"name": "x"'),
    ("output_name", '{"uri": "/fileShares/chips/../../outside"}'),
    ("output_name", '{"uri": "/rasterStores/rs/models"}'),
    ("output_name", "[1, 2]"),
    ("model_type", ""),
    ("model_type", "UNETT"),
    ("arguments", '{"no_such_argument": "1"}'),
    ("arguments", '{"class_balancing": "maybe"}'),
    ("arguments", '{"dice_loss_fraction": "2"}'),
    ("arguments", '{"ignore_classes": "[42]"}'),
    ("arguments", '{"mixup": "sometimes"}'),
    ("arguments", "[1, 2]"),
    ("batch_size", "abc"),
    ("batch_size", "0"),
    ("batch_size", "2.5"),
    ("max_epochs", "-1"),
    ("learning_rate", "fast"),
    ("learning_rate", "-0.1"),
    ("learning_rate", "nan"),
    ("backbone_model", "RESNET999"),
    ("backbone_model", "VGG16"),
    ("validation_percent", "100"),
    ("validation_percent", "-5"),
    ("pretrained_model", '{"uri": "/fileShares/chips/old.dlpk"}'),
    ("pretrained_model", "{not json"),
    ("stop_training", "maybe"),
    ("freeze_model", "2"),
    ("overwrite_model", "perhaps"),
    ("context", "[1]"),
    ("context", '{"processorType": "TPU"}'),
    ("data_augmentation", "SOMETIMES"),
    ("data_augmentation", "FILE"),
    ("augmentation_parameters", '[["rotate", "45.0;0.3"]]'),
    ("augmentation_parameters", "{bad"),
    ("augmentation_parameters", '[["rotate", "45.0;0.3"]]'),
    ("chip_size", "64"),
    ("chip_size", "abc"),
    ("resize_to", "64"),
    ("weight_init_scheme", "GREEN_BAND"),
    ("monitor", "AVERAGE_PRECISION"),
    ("monitor", "BLEU"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_bad_parameter_gets_the_envelope_naming_it(server: Server, client: httpx.Client, name: str, value: str) -> None:
    error = _error(client, server, **{name: value})
    assert error["code"] == 400 and error["message"] == "Unable to complete operation."
    details = error["details"]
    assert isinstance(details, list) and details and f"'{name}'" in details[0], details


def test_every_arcgis_model_type_trains_or_is_refused_with_its_reason(server: Server, client: httpx.Client) -> None:
    assert set(catalog.ALL_MODEL_TYPES) == set(catalog.BUILT) | set(catalog.REFUSED)
    for keyword, reason in catalog.REFUSED.items():  # the OpenMMLab ones on a host without OpenMMLab
        details = " ".join(_error(client, server, model_type=keyword)["details"])
        assert keyword in details and "cannot be trained by this server" in details and reason in details


@pytest.mark.parametrize(
    "value",
    ['[["spin", "45;0.5"]]', '[["rotate", "45"]]', '[["zoom", "(1.0,x);1"]]', '[["crop", "64;1;(0,1);(0,1)"]]',
     '[["brightness", "2;0.5"]]', '[["flip_lr", "1.5"]]', "[]", '[["rotate", "1;1"], ["rotate", "2;1"]]'],
)  # fmt: skip
def test_custom_augmentation_grammar_errors_name_the_parameter(
    server: Server, client: httpx.Client, value: str
) -> None:
    error = _error(client, server, data_augmentation="CUSTOM", augmentation_parameters=value)
    assert "'augmentation_parameters'" in str(error["details"])


def test_custom_augmentation_without_parameters_is_refused(server: Server, client: httpx.Client) -> None:
    assert "'augmentation_parameters'" in str(_error(client, server, data_augmentation="CUSTOM")["details"])


def test_bad_keyword_lists_what_is_allowed(server: Server, client: httpx.Client) -> None:
    assert "RESNET18, RESNET34" in str(_error(client, server, backbone_model="VGG16")["details"])
    assert "VALID_LOSS, ACCURACY, MIOU" in str(_error(client, server, monitor="DICE")["details"])


def test_wrong_metadata_format_names_found_and_accepted(server: Server, client: httpx.Client) -> None:
    shared = Path(server.stores["/fileShares/chips"]) / "kitti"
    if not shared.exists():
        source = Path(__file__).resolve().parents[3] / "shared" / "data" / "kitti-phragmites-6band"
        os.symlink(source if source.exists() else "/nonexistent", shared)
    details = str(_error(client, server, in_folder="/fileShares/chips/kitti")["details"])
    # a symlink out of the store is refused before anything is read; the message says so
    assert "leaves its data store" in details


def test_kitti_export_is_refused_for_unet(server: Server, client: httpx.Client, tmp_path: Path) -> None:
    import shutil

    source = Path(__file__).resolve().parents[3] / "shared" / "data" / "kitti-phragmites-6band"
    target = Path(server.stores["/fileShares/chips"]) / "kitti_copy"
    if not target.exists():
        shutil.copytree(source, target)
    details = str(_error(client, server, in_folder="/fileShares/chips/kitti_copy")["details"])
    assert "KITTI_rectangles" in details and "Classified_Tiles" in details


def test_existing_model_name_needs_overwrite(server: Server, client: httpx.Client) -> None:
    """A name is a portal item: the anonymous owner of GEOTRAIN_AUTH=none has one called "taken"."""
    added = client.post(
        f"{server.url}/portal/sharing/rest/content/users/anonymous/addItem",
        data={"f": "json", "type": "Deep Learning Package", "title": "taken"}, files={"file": ("taken.dlpk", b"PK")},
    ).json()  # fmt: skip
    assert added["success"], added
    assert "overwrite_model" in str(_error(client, server, output_name={"name": "taken"})["details"])
    ok = client.post(
        server.url + TASK + "/submitJob",
        data=arcgis_form(**{**GOOD, "output_name": {"name": "taken"}, "overwrite_model": "TRUE"}),
    )
    job_id = ok.json()["jobId"]
    client.post(f"{server.url}/jobs/{job_id}/cancel", data={"f": "json"})


def test_garbage_bodies_never_give_a_500(server: Server, client: httpx.Client) -> None:
    for content, ctype in (
        (b"\xff\xfe\x00garbage=%%%", "application/x-www-form-urlencoded"),
        (b"--x\r\n", "multipart/form-data; boundary=x"),
    ):
        response = client.post(
            server.url + TASK + "/submitJob?f=json", content=content, headers={"content-type": ctype}
        )
        assert response.status_code == 200 and response.json()["error"]["code"] == 400


def test_multipart_form_bodies_are_read_too(server: Server, client: httpx.Client) -> None:
    form = arcgis_form(**GOOD)
    response = client.post(server.url + TASK + "/submitJob", files={k: (None, v) for k, v in form.items()})
    job_id = response.json()["jobId"]
    client.post(f"{server.url}/jobs/{job_id}/cancel", data={"f": "json"})


def test_errors_render_as_html_when_html_is_asked_for(server: Server, client: httpx.Client) -> None:
    form = arcgis_form(**{**GOOD, "batch_size": "lots"})
    form["f"] = "html"
    page = client.post(server.url + TASK + "/submitJob", data=form)
    assert page.headers["content-type"].startswith("text/html") and "batch_size" in page.text


def test_detection_model_refuses_a_classified_tiles_export(server: Server, client: httpx.Client) -> None:
    details = str(_error(client, server, model_type="FASTERRCNN")["details"])
    assert "Classified_Tiles" in details and "PASCAL_VOC_rectangles, KITTI_rectangles" in details


@pytest.mark.parametrize(
    ("model_type", "arguments", "expected"),
    [
        ("SSD", {"grids": "[4, 0]"}, "'grids' = [4, 0] is not allowed. Expected a list of grid sizes"),
        ("SSD", {"ratios": "[0.5, 1]"}, "Expected a list of [width, height] anchor ratios"),
        ("SSD", {"zooms": "[]"}, "'zooms' = [] is not allowed"),
        ("SSD", {"ssd_version": "3"}, "Expected 1 or 2"),
        ("SSD", {"bias": "-40"}, "Expected a number from -20 to 20"),
        ("RETINANET", {"ratios": "[[1, 1]]"}, "Expected a list of anchor aspect ratios"),
        ("RETINANET", {"grids": "[4]"}, "unknown argument 'grids' for RETINANET"),
        ("MASKRCNN", {"rpn_nms_thresh": "1.5"}, "Expected a number from 0 to 1"),
        ("MASKRCNN", {"box_detections_per_img": "0"}, "Expected a whole number of at least 1"),
        ("YOLOV3", {"anchors": "[[10, 13]]"}, "Expected nine [width, height] anchor sizes"),
        ("YOLOV3", {"n_bands": "0"}, "Expected the export's band count"),
    ],
)
def test_detector_arguments_are_checked_at_submit(
    server: Server, client: httpx.Client, model_type: str, arguments: dict[str, str], expected: str
) -> None:
    folder = "/fileShares/chips/uint16_4band"
    details = str(_error(client, server, in_folder=folder, model_type=model_type, arguments=arguments)["details"])
    assert "'arguments'" in details and expected in details, details


def test_yolov3_n_bands_must_match_the_export(server: Server, client: httpx.Client) -> None:
    from tests import formats

    store = Path(server.stores["/fileShares/chips"])
    if not (store / "voc3").exists():
        formats.pascal_voc(store / "voc3")
    details = str(
        _error(client, server, in_folder="/fileShares/chips/voc3", model_type="YOLOV3", arguments={"n_bands": "4"})[
            "details"
        ]
    )
    assert "'arguments'" in details and "n_bands is 4, but the export's chips have 3 bands" in details


def test_detection_arguments_are_checked_per_model(server: Server, client: httpx.Client) -> None:
    details = str(_error(client, server, model_type="FASTERRCNN", arguments={"class_balancing": "True"})["details"])
    assert "unknown argument 'class_balancing' for FASTERRCNN" in details
    assert "'monitor'" in str(_error(client, server, model_type="FASTERRCNN", monitor="MIOU")["details"])


def test_file_augmentation_without_transforms_json_says_where_it_is_read(server: Server, client: httpx.Client) -> None:
    details = str(_error(client, server, data_augmentation="FILE")["details"])
    assert "'data_augmentation'" in details and "transforms.json" in details and "there is none" in details


def test_a_wrong_transforms_json_is_refused_at_submit_naming_the_problem(server: Server, client: httpx.Client) -> None:
    import shutil

    folder = Path(server.stores["/fileShares/chips"]) / "with_transforms"
    if not folder.exists():
        shutil.copytree(Path(server.stores["/fileShares/chips"]) / "uint16_4band", folder)
    (folder / "transforms.json").write_text('{"Training": {"rotate": {"degree": 30}}}')
    details = str(
        _error(client, server, in_folder="/fileShares/chips/with_transforms", data_augmentation="FILE")["details"]
    )
    assert "'data_augmentation'" in details and "rotate has no argument degree; it takes degrees, p" in details
    (folder / "transforms.json").write_text('{"Training": {"crop": {"size": 4096}}}')
    details = str(
        _error(client, server, in_folder="/fileShares/chips/with_transforms", data_augmentation="FILE")["details"]
    )
    assert "'data_augmentation'" in details and "transforms.json: crop 4096 is larger than the exported" in details


def test_a_backbone_the_model_does_not_take_lists_the_ones_it_does(server: Server, client: httpx.Client) -> None:
    details = str(_error(client, server, model_type="YOLOV3", backbone_model="RESNET50")["details"])
    assert "'backbone_model'" in details and "YOLOV3" in details and "DARKNET53" in details


def test_a_gpu_job_is_refused_when_no_worker_has_a_gpu(server: Server, client: httpx.Client) -> None:
    from geotrain.config import Settings

    if Settings().visible_gpus():
        pytest.skip("this host has a GPU: its worker takes GPU jobs")
    error = _error(client, server, context='{"processorType": "GPU"}')
    details = " ".join(error["details"])  # type: ignore[arg-type]
    assert error["code"] == 400 and "'context'" in details and "no running worker has the 'gpu' label" in details
    assert "(cpu)" in details  # the embedded worker, and what it runs
