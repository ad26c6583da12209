"""The embedded portal's items and files on a real SQLite file and a real PostgreSQL database: who sees what,
search, folders, multipart parts joined in part order, and a job's package moved in as an item."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from geotrain.errors import GeotrainError
from geotrain.jobs.db import make_engine, make_sessionmaker, migrate
from geotrain.jobs.items import Items, Query
from geotrain.portal.content import Content
from geotrain.publish.portal import ITEM_TYPE, EmbeddedPortal, ItemSpec


@pytest.fixture(params=["sqlite", "postgresql"])
def content(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Content]:
    url = f"sqlite:///{tmp_path / 'items.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    migrate(url)
    engine = make_engine(url)
    yield Content(Items(make_sessionmaker(engine)), tmp_path / "items")
    engine.dispose()


def test_private_items_are_their_owners_and_shared_ones_readable_by_all(content: Content) -> None:
    mine = content.add(
        "alice", {"title": "Roads model", "type": ITEM_TYPE, "tags": ["roads"]}, io.BytesIO(b"x"), "r.dlpk"
    )
    assert content.items.get(mine.id, "alice") is not None
    assert content.items.get(mine.id, "bob") is None and content.items.get(mine.id, "anonymous") is None
    assert content.items.update(mine.id, "bob", {"title": "stolen"}) is None
    assert content.items.delete(mine.id, "bob") is None
    assert content.items.search(Query(text="roads"), "bob", 1, 10) == (0, [])
    content.items.update(mine.id, "alice", {}, access="org")
    assert content.items.get(mine.id, "bob") is not None and content.items.get(mine.id, "anonymous") is None
    content.items.update(mine.id, "alice", {}, access="public")
    assert content.items.get(mine.id, "anonymous") is not None


def test_search_matches_owner_type_title_words_and_tags_and_pages(content: Content) -> None:
    for n in range(5):
        content.add("alice", {"title": f"Model {n} buildings", "type": ITEM_TYPE, "tags": [f"t{n}"]}, None, None)
    content.add("alice", {"title": "notes", "type": "CSV"}, None, None)
    total, page = content.items.search(Query(owner="ALICE", type=ITEM_TYPE.lower()), "alice", 1, 2, "title")
    assert total == 5 and [i.title for i in page] == ["Model 0 buildings", "Model 1 buildings"]
    _, rest = content.items.search(Query(owner="alice", type=ITEM_TYPE), "alice", 5, 2, "title")
    assert [i.title for i in rest] == ["Model 4 buildings"]
    assert content.items.search(Query(title="buildings 3"), "alice", 1, 10)[0] == 1
    assert content.items.search(Query(tags="t2"), "alice", 1, 10)[1][0].title == "Model 2 buildings"
    assert content.items.search(Query(title="100%_"), "alice", 1, 10)[0] == 0  # LIKE wildcards are escaped


def test_parts_sent_out_of_order_are_joined_in_part_order(content: Content) -> None:
    item = content.start_multipart("alice", {"title": "big", "type": ITEM_TYPE}, "big.dlpk")
    for number, data in ((2, b"BB"), (3, b"C"), (1, b"AA"), (2, b"bb")):  # a part sent again replaces it
        content.add_part(item, number, io.BytesIO(data))
    assert content.data_path(item) is None  # nothing to download before the commit
    done = content.commit(item, {"snippet": "joined"})
    assert (done.status, done.size, done.snippet) == ("completed", 5, "joined")
    path = content.data_path(done)
    assert path is not None and path.read_bytes() == b"AAbbC"
    assert not (content.folder_of(item.id) / "parts").exists()
    with pytest.raises(GeotrainError, match="not a multipart upload"):
        content.add_part(done, 4, io.BytesIO(b"late"))


def test_a_jobs_package_becomes_an_item_and_overwrite_keeps_its_id(content: Content, tmp_path: Path) -> None:
    portal = EmbeddedPortal(content)
    assert content.items.create_folder("alice", "models") is not None
    assert content.items.create_folder("alice", "models") is None  # one folder of a title per owner
    spec = ItemSpec(title="bldg", folder="models", tags=["t"], type_keywords=["Deep Learning", "Raster"],
                    description=None, snippet=None)  # fmt: skip
    first = tmp_path / "w1" / "bldg.dlpk"
    first.parent.mkdir()
    first.write_bytes(b"first")
    made = portal.publish("alice", first, spec, replace=None)
    assert not first.exists()  # moved, not copied
    assert portal.existing("alice", "BLDG") == made["itemId"] and portal.existing("bob", "bldg") is None
    second = tmp_path / "w2" / "bldg.dlpk"
    second.parent.mkdir()
    second.write_bytes(b"second!")
    again = portal.publish("alice", second, spec, replace=made["itemId"])
    assert again["itemId"] == made["itemId"]
    fetched = portal.fetch("alice", made["itemId"], tmp_path)
    assert fetched is not None and fetched.read_bytes() == b"second!"
    assert portal.fetch("bob", made["itemId"], tmp_path) is None
    folder = content.items.folder("alice", "models")
    assert folder is not None and [i.id for i in content.items.in_folder("alice", folder.id)] == [made["itemId"]]
