"""Authentication and ownership over real HTTP: GEOTRAIN_AUTH=token with users kept by `geotrain user`,
tokens from generateToken passed the three ways ArcGIS clients pass them, 498/499 envelopes, jobs visible
only to their submitter, data stores granted per user, and GEOTRAIN_AUTH=portal trusting another server's
tokens."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TASK, Server, arcgis_form

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}


def _user_command(server: Server, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geotrain.cli", "user", *args], env=server.env(), input=stdin, text=True,
        capture_output=True, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, store_root: Path) -> Iterator[Server]:
    """A token-mode server without workers (jobs stay queued: ownership needs no training). alice may read
    the chips store; bob only a store of his own."""
    home = tmp_path_factory.mktemp("secured") / "home"
    other = tmp_path_factory.mktemp("bobs")
    stores = {"/fileShares/chips": str(store_root), "/fileShares/bob": str(other)}
    server = Server(home=home, stores=stores, workers=0, extra_env={"GEOTRAIN_AUTH": "token"})
    added = _user_command(server, "add", "alice", "--password-stdin", "--stores", "/fileShares/chips",
                          stdin=PASSWORDS["alice"] + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    added = _user_command(server, "add", "bob", "--password-stdin", "--stores", "/fileShares/bob",
                          stdin=PASSWORDS["bob"] + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    server.start()
    yield server
    server.stop()


def _token(client: httpx.Client, server: Server, user: str, **extra: str) -> str:
    body = client.post(
        f"{server.url}/sharing/rest/generateToken",
        data={"username": user, "password": PASSWORDS[user], "client": "referer", "referer": "http", "f": "json",
              **extra},
    ).json()  # fmt: skip
    assert "token" in body, body
    return str(body["token"])


def _submit(client: httpx.Client, server: Server, token: str, folder: str = "/fileShares/chips/rgb8") -> Any:
    form = arcgis_form(in_folder=folder, output_name={"name": "owned"}, model_type="UNET", max_epochs=1)
    return client.post(f"{server.url}{TASK}/submitJob", data={**form, "token": token}).json()


def test_the_server_says_where_tokens_come_from(secured: Server, client: httpx.Client) -> None:
    for path in ("/arcgis/rest/info", "/sharing/rest/info"):
        info = client.get(secured.url + path, params={"f": "json"}).json()["authInfo"]
        assert info["isTokenBasedSecurity"] is True
        assert info["tokenServicesUrl"] == f"{secured.url}/sharing/rest/generateToken"


def test_generate_token_checks_the_password_and_honours_the_expiration(secured: Server, client: httpx.Client) -> None:
    url = f"{secured.url}/sharing/rest/generateToken"
    wrong = client.post(url, data={"username": "alice", "password": "nope", "f": "json"}).json()
    assert wrong["error"]["message"] == "Unable to generate token."
    assert wrong["error"]["details"] == ["Invalid username or password."]
    nobody = client.post(url, data={"username": "mallory", "password": "nope", "f": "json"}).json()
    assert nobody["error"]["details"] == wrong["error"]["details"]  # no hint which names exist
    by_get = client.get(url, params={"username": "alice", "password": PASSWORDS["alice"], "f": "json"}).json()
    assert "token" not in by_get and "POST" in by_get["error"]["details"][0]
    body = client.post(url, data={"username": "alice", "password": PASSWORDS["alice"], "expiration": "5",
                                  "f": "json"}).json()  # fmt: skip
    assert abs(body["expires"] / 1000 - (time.time() + 300)) < 30


def test_no_token_gets_499_and_a_bad_one_498(secured: Server, client: httpx.Client) -> None:
    for path in (TASK, f"{TASK}/submitJob", "/jobs/jdeadbeef"):
        missing = client.post(secured.url + path, data={"f": "json"})
        assert missing.status_code == 200  # as ArcGIS Server: the code is in the body
        assert missing.json()["error"]["code"] == 499 and missing.json()["error"]["message"] == "Token Required."
        bad = client.post(secured.url + path, data={"f": "json", "token": "forged"}).json()
        assert bad["error"]["code"] == 498 and "Invalid Token" in bad["error"]["message"]


def test_a_token_works_as_parameter_esri_header_and_bearer_header(secured: Server, client: httpx.Client) -> None:
    token = _token(client, secured, "alice")
    url = secured.url + TASK
    assert "parameters" in client.get(url, params={"f": "json", "token": token}).json()
    assert (
        "parameters"
        in client.get(url, params={"f": "json"}, headers={"X-Esri-Authorization": f"Bearer {token}"}).json()
    )
    assert "parameters" in client.get(url, params={"f": "json"}, headers={"Authorization": f"Bearer {token}"}).json()


def test_a_job_is_seen_and_cancelled_by_its_submitter_only(secured: Server, client: httpx.Client) -> None:
    alice, bob = _token(client, secured, "alice"), _token(client, secured, "bob")
    job_id = _submit(client, secured, alice)["jobId"]
    for path in ("", "/inputs/in_folder", "/results/out_item", "/cancel"):
        for prefix in ("/jobs", f"{TASK}/jobs"):
            theirs = client.post(f"{secured.url}{prefix}/{job_id}{path}", data={"f": "json", "token": bob}).json()
            assert theirs["error"]["code"] == 404, (path, theirs)
            assert job_id in theirs["error"]["message"]
    status = client.get(f"{secured.url}/jobs/{job_id}", params={"f": "json", "token": alice}).json()
    assert status["jobStatus"] == "esriJobSubmitted"  # bob's cancel changed nothing
    echoed = client.get(f"{secured.url}/jobs/{job_id}/inputs/in_folder", params={"f": "json", "token": alice}).json()
    assert echoed["value"] == "/fileShares/chips/rgb8"
    cancelled = client.post(f"{secured.url}/jobs/{job_id}/cancel", data={"f": "json", "token": alice}).json()
    assert cancelled["jobStatus"] == "esriJobCancelled"


def test_data_stores_are_granted_per_user(secured: Server, client: httpx.Client) -> None:
    refused = _submit(client, secured, _token(client, secured, "bob"))
    assert refused["error"]["code"] == 400
    details = " ".join(refused["error"]["details"])
    assert "in_folder" in details and "/fileShares/chips" not in details.split("registered")[-1]
    assert "jobId" in _submit(client, secured, _token(client, secured, "alice"))
    listed = _user_command(secured, "list")
    assert "alice\t/fileShares/chips" in listed.stdout and "bob\t/fileShares/bob" in listed.stdout


def test_removing_a_user_ends_its_tokens(secured: Server, client: httpx.Client) -> None:
    added = _user_command(secured, "add", "carol", "--password-stdin", stdin="carol-secret-3\n")
    assert added.returncode == 0, added.stderr
    PASSWORDS["carol"] = "carol-secret-3"
    token = _token(client, secured, "carol")
    assert "parameters" in client.get(secured.url + TASK, params={"f": "json", "token": token}).json()
    assert _user_command(secured, "remove", "carol").returncode == 0
    gone = client.get(secured.url + TASK, params={"f": "json", "token": token}).json()
    assert gone["error"]["code"] == 498


def test_portal_mode_trusts_the_portals_tokens(
    secured: Server, client: httpx.Client, tmp_path: Path, store_root: Path
) -> None:
    """A second server with GEOTRAIN_AUTH=portal takes the first as its portal: the portal's tokens work,
    their user owns the jobs, and tokens come from the portal, not from it."""
    trusting = Server(
        home=tmp_path / "home", stores={"/fileShares/chips": str(store_root)}, workers=0,
        extra_env={"GEOTRAIN_AUTH": "portal", "GEOTRAIN_PORTAL_URL": secured.url},
    ).start()  # fmt: skip
    try:
        info = client.get(f"{trusting.url}/arcgis/rest/info", params={"f": "json"}).json()["authInfo"]
        assert info["tokenServicesUrl"] == f"{secured.url}/sharing/rest/generateToken"
        alice = _token(client, secured, "alice")
        job_id = _submit(client, trusting, alice)["jobId"]
        me = client.get(f"{trusting.url}/sharing/rest/community/self", params={"f": "json", "token": alice}).json()
        assert me["username"] == "alice"
        bob = _token(client, secured, "bob")
        assert (
            client.get(f"{trusting.url}/jobs/{job_id}", params={"f": "json", "token": bob}).json()["error"]["code"]
            == 404
        )
        assert (
            client.get(f"{trusting.url}/jobs/{job_id}", params={"f": "json", "token": alice}).json()["jobId"] == job_id
        )
        forged = client.get(f"{trusting.url}/jobs/{job_id}", params={"f": "json", "token": "forged"}).json()
        assert forged["error"]["code"] == 498
        credentials = {"username": "alice", "password": PASSWORDS["alice"], "f": "json"}
        issued = client.post(f"{trusting.url}/sharing/rest/generateToken", data=credentials)
        assert secured.url in issued.json()["error"]["details"][0]
    finally:
        trusting.stop()
