"""The embedded portal's small parts: its search syntax, signed sign-in values, upload file names, item URLs."""

from __future__ import annotations

import time

import pytest

from geotrain.api import signed
from geotrain.errors import GeotrainError, ParameterError
from geotrain.jobs.items import Query
from geotrain.portal.content import safe_filename
from geotrain.portal.search import parse
from geotrain.task.pretrained import item_id_of

KEY = b"k" * 32


def test_search_reads_the_query_arcgis_sends_for_a_typed_search() -> None:
    query = parse('owner:"alice" AND title:"big" AND  (type:"deep learning package") accountid:geotrain')
    assert query == Query(owner="alice", type="deep learning package", title="big")


def test_search_keeps_parentheses_inside_quotes_and_free_words() -> None:
    assert parse('title:"a (b)" roads -type:x') == Query(title="a (b)", text="roads")


def test_search_refuses_fields_it_does_not_know_and_contradictions() -> None:
    with pytest.raises(ParameterError, match="'colour:' is not a field"):
        parse("colour:red")
    with pytest.raises(ParameterError, match="owner is given twice"):
        parse("owner:a owner:b")


def test_a_signed_value_reads_back_only_with_its_key_purpose_and_time() -> None:
    value = signed.sign(KEY, "oauth-code", {"user": "alice"}, 60)
    assert signed.unsign(KEY, "oauth-code", value)["user"] == "alice"  # type: ignore[index]
    assert signed.unsign(b"other" * 8, "oauth-code", value) is None
    assert signed.unsign(KEY, "oauth-refresh", value) is None
    body, mac = value.split(".")
    assert signed.unsign(KEY, "oauth-code", body[:-2] + "xx." + mac) is None
    assert signed.unsign(KEY, "oauth-code", "garbage") is None
    expired = signed.sign(KEY, "oauth-code", {"user": "alice"}, -1)
    time.sleep(0.01)
    assert signed.unsign(KEY, "oauth-code", expired) is None


@pytest.mark.parametrize("name", ["", ".", "..", "a/..", "x\x00y.dlpk", "bad\nname"])
def test_upload_file_names_that_could_escape_or_hide_are_refused(name: str) -> None:
    with pytest.raises(GeotrainError):
        safe_filename(name)


def test_upload_file_names_keep_only_their_last_part() -> None:
    assert safe_filename("C:\\models\\roads.dlpk") == "roads.dlpk"
    assert safe_filename("../../etc/passwd") == "passwd"


def test_item_ids_are_read_from_the_urls_clients_give() -> None:
    item = "0123456789abcdef0123456789abcdef"
    assert item_id_of(f"https://h/portal/sharing/rest/content/items/{item}/data") == item
    assert item_id_of(f"https://h/portal/home/item.html?id={item}") == item
    assert item_id_of("https://h/models/m.dlpk") is None
