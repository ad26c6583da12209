"""The embedded portal over HTTPS, driven by the official arcgis client unmodified (sign-in by OAuth and by
generateToken, arcgis.learn.train_model, the package's own multipart upload) and by plain HTTP calls as
ArcGIS REST JS makes them; items kept from other users."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TASK, Server, arcgis_form, self_signed, wait_for

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}
DLPK = "Deep Learning Package"


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory, store_root: Path) -> Iterator[Server]:
    """geotrain alone, over HTTPS with a self-signed certificate, users alice and bob, one embedded worker."""
    home = tmp_path_factory.mktemp("portal") / "home"
    server = Server(
        home=home, stores={"/fileShares/chips": str(store_root)}, extra_env={"GEOTRAIN_AUTH": "token"},
        tls=self_signed(tmp_path_factory.mktemp("tls")),
    )  # fmt: skip
    for user, password in PASSWORDS.items():
        added = subprocess.run(
            [sys.executable, "-m", "geotrain.cli", "user", "add", user, "--password-stdin"], env=server.env(),
            input=password + "\n", text=True, capture_output=True, check=False,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
    server.start()
    yield server
    server.stop()


@pytest.fixture
def web() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, verify=False) as c:
        yield c


def _rest(server: Server) -> str:
    return f"{server.url}/portal/sharing/rest"


def _token(web: httpx.Client, server: Server, user: str) -> str:
    """As REST JS's generateToken: a form POST with username, password, referer."""
    form = {"username": user, "password": PASSWORDS[user], "client": "referer", "referer": "http://app", "f": "json"}
    body = web.post(f"{_rest(server)}/generateToken", data=form)
    assert "token" in body.json(), body.text
    return str(body.json()["token"])


def _gis(server: Server, user: str = "alice", **options: Any) -> Any:
    from arcgis.gis import GIS

    return GIS(f"{server.url}/portal", user, PASSWORDS[user], verify_cert=False, **options)


def test_the_official_client_trains_with_train_model_and_gets_a_deep_learning_package_item(
    portal: Server, web: httpx.Client
) -> None:
    import arcgis.learn
    import torch
    from arcgis.gis import Item

    gis = _gis(portal)  # the built-in OAuth sign-in, arcgis's default
    assert gis.properties.user.username == "alice"
    item = arcgis.learn.train_model(
        input_folder="/fileShares/chips/rgb8", model_type="UNET", backbone_model="RESNET18", max_epochs=1,
        batch_size=2, learning_rate=0.001, output_name="client_unet", gis=gis,
    )  # fmt: skip
    assert isinstance(item, Item)
    assert (item.type, item.title, item.owner) == (DLPK, "client_unet", "alice")
    assert {"Deep Learning", "Raster"} <= set(item.typeKeywords)
    # the client stamps the job on the item right after it finishes (item.update), as it does with ArcGIS
    assert item.properties["jobStatus"] == "completed" and item.properties["jobId"].startswith("j")
    path = Path(item.download(save_path=str(portal.home.parent / "downloads")))
    with zipfile.ZipFile(path) as zf:
        emd = json.loads(zf.read("client_unet.emd"))
        weights = torch.load(io.BytesIO(zf.read(emd["ModelFile"])), weights_only=True)
    assert emd["ModelConfiguration"] == "geotrain.unet" and "ModelCharacteristics/loss_graph.png" in zf.namelist()
    assert any(k.endswith("segmentation_head.0.weight") for k in weights)
    assert [i.id for i in gis.content.search("title:client_unet", item_type=DLPK)] == [item.id]
    # the job's result, read as ArcGIS clients read it, names the item and where it is
    job_id = item.properties["jobId"]
    signed_in = {"X-Esri-Authorization": f"Bearer {_token(web, portal, 'alice')}"}
    result = web.get(f"{portal.url}{TASK}/jobs/{job_id}/results/out_item", params={"f": "json"}, headers=signed_in)
    value = result.json()["value"]
    assert value["itemId"] == item.id and value["url"].endswith(f"/portal/sharing/rest/content/items/{item.id}")


def test_the_official_client_signs_in_with_generate_token_and_bad_passwords_are_told(portal: Server) -> None:
    gis = _gis(portal, use_gen_token=True)
    assert gis.users.me.username == "alice"
    from arcgis.gis import GIS

    with pytest.raises(Exception, match="Invalid username or password"):
        GIS(f"{portal.url}/portal", "alice", "wrong", verify_cert=False)


def test_the_publisher_uploads_a_large_package_through_the_arcgis_package_in_parts(
    portal: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """geotrain's own publisher (the path it takes to an external portal) against the embedded portal: a
    12 MB package goes as three parts, sent several at a time, and comes back byte for byte."""
    import requests

    from geotrain.config import Settings
    from geotrain.publish.portal import ExternalPortal, ItemSpec

    parts: list[str] = []
    send = requests.Session.send

    def spy(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if "/addPart" in str(request.url):
            parts.append(str(request.url).split("partNum=")[1].split("&")[0])
        return send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", spy)
    package = tmp_path / "large.dlpk"
    package.write_bytes(bytes(range(256)) * (12_000_000 // 256))
    settings = Settings(home=tmp_path / "home", portal_url=f"{portal.url}/portal", portal_username="alice",
                        portal_password=PASSWORDS["alice"], portal_verify=False)  # fmt: skip
    publisher = ExternalPortal(settings, token=None)
    spec = ItemSpec(title="large", folder="big models", tags=["test"], type_keywords=["Deep Learning", "Raster"],
                    description=None, snippet="a large package")  # fmt: skip
    result = publisher.publish("alice", package, spec, replace=None)
    assert sorted(parts) == ["1", "2", "3"]
    assert publisher.existing("alice", "large") == result["itemId"]
    fetched = publisher.fetch("alice", result["itemId"], tmp_path / "fetched")
    assert fetched is not None and fetched.read_bytes() == package.read_bytes()
    gis = _gis(portal)
    assert gis.content.get(result["itemId"]).ownerFolder == gis.content.folders.get("big models").properties["id"]


def test_rest_js_calls_add_an_item_in_parts_out_of_order_and_manage_it(portal: Server, web: httpx.Client) -> None:
    token = _token(web, portal, "alice")
    users = f"{_rest(portal)}/content/users/alice"
    added = web.post(f"{users}/addItem", data={
        "f": "json", "token": token, "multipart": "true", "filename": "parts.dlpk", "type": DLPK, "title": "parts",
        "tags": "one,two", "typeKeywords": "Deep Learning,Raster", "async": "true",
    }).json()  # fmt: skip
    item_id = added["id"]
    chunks = [b"A" * 1000, b"B" * 1000, b"C" * 10]
    for number in (3, 1, 2):  # REST JS sends parts as they are ready, in any order
        answer = web.post(f"{users}/items/{item_id}/addPart", params={"partNum": number, "f": "json"},
                          data={"token": token}, files={"file": ("parts.dlpk", chunks[number - 1])}).json()  # fmt: skip
        assert answer == {"success": True, "id": item_id}
    status = web.get(f"{users}/items/{item_id}/status", params={"f": "json", "token": token}).json()
    assert status["status"] == "partial"
    assert web.post(f"{users}/items/{item_id}/commit", data={"f": "json", "token": token, "type": DLPK}).json()[
        "success"
    ]
    assert web.get(f"{users}/items/{item_id}/status", params={"f": "json", "token": token}).json()["status"] == (
        "completed"
    )
    data = web.get(f"{_rest(portal)}/content/items/{item_id}/data", params={"token": token})
    assert data.content == b"".join(chunks)
    described = web.get(f"{_rest(portal)}/content/items/{item_id}", params={"f": "json", "token": token}).json()
    assert (described["size"], described["tags"], described["access"]) == (2010, ["one", "two"], "private")
    found = web.get(f"{_rest(portal)}/search", params={
        "f": "json", "token": token, "q": f'owner:alice AND type:"{DLPK}" AND title:parts'}).json()  # fmt: skip
    assert [r["id"] for r in found["results"]] == [item_id]
    updated = web.post(f"{users}/items/{item_id}/update", data={"f": "json", "token": token, "snippet": "joined",
                                                               "properties": json.dumps({"k": 1})}).json()  # fmt: skip
    assert updated["success"]
    described = web.get(f"{_rest(portal)}/content/items/{item_id}", params={"f": "json", "token": token}).json()
    assert (described["snippet"], described["properties"]) == ("joined", {"k": 1})
    assert web.post(f"{users}/items/{item_id}/delete", data={"f": "json", "token": token}).json()["success"]
    gone = web.get(f"{_rest(portal)}/content/items/{item_id}", params={"f": "json", "token": token}).json()
    assert gone["error"]["code"] == 404


def test_one_user_cannot_read_update_or_delete_anothers_private_item(portal: Server, web: httpx.Client) -> None:
    alice, bob = _token(web, portal, "alice"), _token(web, portal, "bob")
    added = web.post(f"{_rest(portal)}/content/users/alice/addItem",
                     data={"f": "json", "token": alice, "type": DLPK, "title": "secret model"},
                     files={"file": ("secret.dlpk", b"PK-secret")}).json()  # fmt: skip
    item_id = added["id"]
    item_url = f"{_rest(portal)}/content/items/{item_id}"
    as_bob = {"f": "json", "token": bob}

    def error_code(response: httpx.Response) -> int:
        return int(response.json()["error"]["code"])

    assert error_code(web.get(item_url, params=as_bob)) == 404  # not even its existence
    assert error_code(web.get(f"{item_url}/data", params=as_bob)) == 404
    assert error_code(web.get(item_url, params={"f": "json"})) == 404  # nor to anyone without a token
    for action in ("update", "delete", "share"):
        assert error_code(web.post(f"{_rest(portal)}/content/users/alice/items/{item_id}/{action}",
                                   data={**as_bob, "title": "mine now"})) == 403  # fmt: skip
        assert error_code(web.post(f"{_rest(portal)}/content/users/bob/items/{item_id}/{action}",
                                   data={**as_bob, "title": "mine now"})) == 404  # fmt: skip
    assert error_code(web.get(f"{_rest(portal)}/content/users/alice", params=as_bob)) == 403
    searched = web.get(f"{_rest(portal)}/search", params={**as_bob, "q": "title:secret"}).json()
    assert searched["total"] == 0
    # shared with everyone: bob and anonymous callers read it; it is still alice's alone to change
    shared = web.post(f"{_rest(portal)}/content/users/alice/items/{item_id}/share",
                      data={"f": "json", "token": alice, "everyone": "true"}).json()  # fmt: skip
    assert shared["itemId"] == item_id
    assert web.get(item_url, params=as_bob).json()["title"] == "secret model"
    assert web.get(f"{item_url}/data").content == b"PK-secret"
    assert error_code(web.post(f"{_rest(portal)}/content/users/alice/items/{item_id}/delete", data=as_bob)) == 403
    assert web.get(item_url, params={"f": "json", "token": alice}).json()["title"] == "secret model"


def test_an_item_name_taken_is_refused_at_submit_and_overwrite_replaces_it_fine_tuning_from_an_item(
    portal: Server, web: httpx.Client
) -> None:
    """After the train_model test: client_unet exists. Without overwrite_model the same name is refused at
    submit; with it, a job fine-tuning from that very item (given by its URL) replaces the item's package
    and keeps its id. Another user may not fine-tune from alice's private item."""
    alice, bob = _token(web, portal, "alice"), _token(web, portal, "bob")
    search = web.get(f"{_rest(portal)}/search", params={"f": "json", "token": alice, "q": "title:client_unet"})
    assert search.json()["results"], "needs the item the train_model test made"
    item = search.json()["results"][0]
    values = {"in_folder": "/fileShares/chips/rgb8", "output_name": {"name": "client_unet"}, "model_type": "UNET",
              "max_epochs": 1, "learning_rate": 0.001, "batch_size": 2}  # fmt: skip
    refused = web.post(f"{portal.url}{TASK}/submitJob", data={**arcgis_form(**values), "token": alice}).json()
    assert "output_name" in json.dumps(refused) and "overwrite_model" in json.dumps(refused), refused
    stolen = {**values, "output_name": {"name": "bobs"}, "pretrained_model": {"itemId": item["id"]}}
    refused = web.post(f"{portal.url}{TASK}/submitJob", data={**arcgis_form(**stolen), "token": bob}).json()
    assert "pretrained_model" in json.dumps(refused) and item["id"] in json.dumps(refused), refused
    # QueryDeepLearningModelInfo reads the item for its owner, and for nobody else
    query = f"{portal.url}/arcgis/rest/services/System/RasterAnalysisTools/GPServer/QueryDeepLearningModelInfo"
    model = json.dumps({"itemId": item["id"]})
    info_job = web.post(f"{query}/submitJob", data={"model": model, "f": "json", "token": alice}).json()["jobId"]
    info = web.get(f"{query}/jobs/{info_job}/results/outModelInfo", params={"f": "json", "token": alice}).json()
    assert json.loads(info["value"]["modelInfo"])["ModelConfiguration"] == "geotrain.unet"
    denied = web.post(f"{query}/submitJob", data={"model": model, "f": "json", "token": bob}).json()
    assert "'model'" in denied["error"]["details"][0] and item["id"] in denied["error"]["details"][0]
    url = f"{_rest(portal)}/content/items/{item['id']}/data"
    replaced = {**values, "overwrite_model": True, "pretrained_model": {"url": url}}
    job_id = web.post(f"{portal.url}{TASK}/submitJob", data={**arcgis_form(**replaced), "token": alice}).json()["jobId"]
    with httpx.Client(timeout=60, verify=False, headers={"X-Esri-Authorization": f"Bearer {alice}"}) as signed_in:
        job = wait_for(signed_in, f"{portal.url}{TASK}/jobs/{job_id}")
    texts = [m["description"] for m in job["messages"]]
    assert job["jobStatus"] == "esriJobSucceeded", texts
    assert any(t.startswith(f"Fine-tuning from item {item['id']}") for t in texts), texts
    result = web.get(f"{portal.url}{TASK}/jobs/{job_id}/results/out_item", params={"f": "json", "token": alice})
    assert result.json()["value"]["itemId"] == item["id"]
    after = web.get(f"{_rest(portal)}/content/items/{item['id']}", params={"f": "json", "token": alice}).json()
    assert after["modified"] > item["modified"]


def test_a_geotrain_that_trusts_this_portal_publishes_into_it_as_the_submitter(
    portal: Server, web: httpx.Client, tmp_path: Path, store_root: Path
) -> None:
    """GEOTRAIN_PORTAL_URL pointing at an ArcGIS portal (this one) without credentials of its own: the job
    fetches its pretrained model from there and replaces the package of the item of its name there, through
    the arcgis package, with the submitter's own token, which is dropped when the job ends."""
    import sqlite3

    alice = _token(web, portal, "alice")
    found = web.get(f"{_rest(portal)}/search", params={"f": "json", "token": alice, "q": "title:client_unet"})
    assert found.json()["results"], "needs the item the train_model test made"
    item = found.json()["results"][0]
    trusting = Server(
        home=tmp_path / "home", stores={"/fileShares/chips": str(store_root)},
        extra_env={"GEOTRAIN_AUTH": "portal", "GEOTRAIN_PORTAL_URL": f"{portal.url}/portal",
                   "GEOTRAIN_PORTAL_VERIFY": "false"},
    ).start()  # fmt: skip
    try:
        values = {"in_folder": "/fileShares/chips/rgb8", "output_name": {"name": "client_unet"}, "model_type": "UNET",
                  "max_epochs": 1, "learning_rate": 0.001, "batch_size": 2, "overwrite_model": True,
                  "pretrained_model": {"itemId": item["id"]}}  # fmt: skip
        submitted = web.post(f"{trusting.url}{TASK}/submitJob", data={**arcgis_form(**values), "token": alice})
        job_id = submitted.json()["jobId"]
        with httpx.Client(timeout=60, headers={"X-Esri-Authorization": f"Bearer {alice}"}) as signed_in:
            job = wait_for(signed_in, f"{trusting.url}{TASK}/jobs/{job_id}")
            texts = [m["description"] for m in job["messages"]]
            assert job["jobStatus"] == "esriJobSucceeded", texts[-1]
            value = signed_in.get(f"{trusting.url}{TASK}/jobs/{job_id}/results/out_item", params={"f": "json"}).json()
        assert any(t.startswith(f"Fine-tuning from item {item['id']}") for t in texts), texts
        assert value["value"]["itemId"] == item["id"]
        assert value["value"]["url"] == f"{portal.url}/portal/sharing/rest/content/items/{item['id']}"
        after = web.get(f"{_rest(portal)}/content/items/{item['id']}", params={"f": "json", "token": alice}).json()
        assert (after["owner"], after["type"], after["title"]) == ("alice", DLPK, "client_unet")
        assert after["modified"] > item["modified"]
        data = web.get(f"{_rest(portal)}/content/items/{item['id']}/data", params={"token": alice})
        with zipfile.ZipFile(io.BytesIO(data.content)) as zf:
            assert "client_unet.emd" in zf.namelist()
        with sqlite3.connect(trusting.home / "geotrain.db") as db:
            assert db.execute("select portal_token from jobs where id = ?", (job_id,)).fetchone() == (None,)
    finally:
        trusting.stop()


def test_the_authorization_code_sign_in_gives_a_token_and_a_refresh_token(portal: Server, web: httpx.Client) -> None:
    """The OAuth pages as an out-of-band app drives them (arcgis's code flow): authorize → sign-in form →
    ``SUCCESS code=…`` → oauth2/token, then a refresh; a redirect to another site is never given a code."""
    import re

    oob = "urn:ietf:wg:oauth:2.0:oob"
    ask = {"client_id": "pythonapi", "response_type": "code", "redirect_uri": oob, "state": "s1", "expiration": "60"}
    page = web.get(f"{_rest(portal)}/oauth2/authorize", params=ask).text
    state = json.loads(re.search(r"var oAuthInfo = (\{.*\});", page).group(1))["oauth_state"]  # type: ignore[union-attr]
    signin = f"{portal.url}/portal/sharing/oauth2/signin"
    wrong = web.post(signin, data={"oauth_state": state, "username": "alice", "password": "nope"}).text
    assert "Invalid username or password" in wrong and "SUCCESS" not in wrong
    done = web.post(signin, data={"oauth_state": state, "username": "alice", "password": PASSWORDS["alice"]}).text
    code = re.search(r"<title>SUCCESS code=(.*?)</title>", done).group(1)  # type: ignore[union-attr]
    token_url = f"{_rest(portal)}/oauth2/token"
    trade = {"grant_type": "authorization_code", "client_id": "pythonapi", "code": code, "redirect_uri": oob}
    granted = web.post(token_url, data=trade).json()
    me = web.get(f"{_rest(portal)}/community/self", params={"f": "json", "token": granted["access_token"]}).json()
    assert me["username"] == "alice"
    refresh = {"grant_type": "refresh_token", "client_id": "pythonapi", "refresh_token": granted["refresh_token"]}
    refreshed = web.post(token_url, data=refresh).json()
    assert refreshed["username"] == "alice" and refreshed["access_token"] != granted["access_token"]
    stolen = web.post(token_url, data={**trade, "client_id": "another-app"}).json()
    assert stolen["error"]["error"] == "invalid_grant"
    elsewhere = web.get(f"{_rest(portal)}/oauth2/authorize", params={**ask, "redirect_uri": "https://evil.example"})
    assert "Invalid redirect_uri" in elsewhere.text and "oauth_state" not in elsewhere.text
