"""The embedded portal: the part of the ArcGIS sharing REST API that clients use to sign in, find the
raster-analysis server, and add, read, change, find and remove items. Served under ``/portal/sharing/rest``
(``GIS("https://host:port/portal")``), ``/sharing/rest`` and ``/arcgis/sharing/rest``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from starlette.datastructures import UploadFile

from geotrain.api.auth import OptionalUserDep, UserDep, accounts, token_service
from geotrain.api.deps import ParamsDep, SettingsDep, gp_route
from geotrain.api.render import render
from geotrain.errors import GeotrainError, NotFound, ParameterError
from geotrain.jobs.accounts import ANONYMOUS
from geotrain.jobs.items import FolderRecord, ItemRecord
from geotrain.jobs.tables import as_utc
from geotrain.portal import search as portal_search
from geotrain.portal.content import Content, Forbidden, item_not_found, word_list
from geotrain.task.metadata import SERVICE_PATH

PORTAL_ID = "geotrain"
PORTAL_VERSION = "2024.1"  # the sharing API of ArcGIS Enterprise 11.3
SHARING = ("/portal/sharing/rest", "/sharing/rest", "/arcgis/sharing/rest")
# where this server's items are, as it names them to clients (results, job pages)
ITEMS = f"{SHARING[0]}/content/items"
MAX_SEARCH_START = 10_000  # as ArcGIS: a search pages through its first ten thousand results
ITEM_FIELDS = ("title", "type", "tags", "typeKeywords", "description", "snippet", "properties", "filename", "fileName",
               "multipart", "async", "overwrite", "clearEmptyFields", "file", "folder", "id")  # fmt: skip
PRIVILEGES = ["portal:user:createItem", "portal:user:viewOrgItems", "portal:user:shareToOrg",
              "portal:user:shareToGroup", "portal:user:joinGroup", "portal:publisher:publishDynamicImagery",
              "premium:publisher:rasteranalysis", "premium:user:basemaps"]  # fmt: skip
router = APIRouter()


def content(request: Request) -> Content:
    found: Content = request.app.state.content
    return found


async def uploads(request: Request, p: ParamsDep) -> dict[str, UploadFile]:
    """The files of a multipart form (``gp_params`` has read the form already; Starlette keeps it)."""
    if request.method != "POST" or "multipart/form-data" not in request.headers.get("content-type", ""):
        return {}
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, UploadFile)}


FilesDep = Annotated[dict[str, UploadFile], Depends(uploads)]


def portal_root(request: Request) -> str:
    """The portal's URL as the client reached it (``…/portal``, ``…/arcgis`` or the server's root)."""
    base = str(request.base_url).rstrip("/")
    for web_adaptor in ("/portal", "/arcgis"):
        if request.url.path.startswith(web_adaptor + "/"):
            return base + web_adaptor
    return base


def _ms(moment: dt.datetime) -> int:
    return int(as_utc(moment).timestamp() * 1000)


def item_json(item: ItemRecord, user: str) -> dict[str, Any]:
    return {
        "id": item.id, "owner": item.owner, "orgId": PORTAL_ID, "created": _ms(item.created_at),
        "modified": _ms(item.modified_at), "guid": None, "name": item.name, "title": item.title, "type": item.type,
        "typeKeywords": list(item.type_keywords), "description": item.description, "tags": list(item.tags),
        "snippet": item.snippet, "thumbnail": None, "documentation": None, "extent": [], "categories": [],
        "spatialReference": None, "accessInformation": None, "licenseInfo": None, "culture": "en-us",
        "properties": item.properties, "url": None, "proxyFilter": None, "access": item.access, "size": item.size,
        "appCategories": [], "industries": [], "languages": [], "largeThumbnail": None, "banner": None,
        "screenshots": [], "listed": False, "ownerFolder": item.folder_id, "protected": False,
        "commentsEnabled": False, "numComments": 0, "numRatings": 0, "avgRating": 0, "numViews": 0,
        "itemControl": "admin" if user == item.owner else "", "contentOrigin": "self",
    }  # fmt: skip


def folder_json(folder: FolderRecord) -> dict[str, Any]:
    return {"username": folder.owner, "id": folder.id, "title": folder.title, "created": _ms(folder.created_at)}


def user_json(name: str, me: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"username": name, "id": name, "fullName": name, "firstName": name, "lastName": "",
                            "orgId": PORTAL_ID, "access": "org", "culture": "en", "region": "WO", "units": "metric",
                            "userType": "both", "tags": [], "groups": [], "provider": "arcgis",
                            "userLicenseTypeId": "creatorUT"}  # fmt: skip
    if me:
        data |= {"role": "org_publisher", "roleId": "org_publisher", "privileges": PRIVILEGES, "level": "2"}
    if name == ANONYMOUS:
        data |= {"role": "org_user", "roleId": "org_user"}
    return data


# ---------------------------------------------------------------------------------------------------- fields
def item_fields(p: dict[str, str]) -> dict[str, Any]:
    """What a request says about an item (only the fields it gives, so an update leaves the rest)."""
    fields: dict[str, Any] = {}
    for key in ("title", "type", "description", "snippet"):
        if key in p and (p[key] != "" or key in ("description", "snippet")):
            fields[key] = p[key]
    if "tags" in p:
        fields["tags"] = word_list(p["tags"])
    if "typeKeywords" in p:
        fields["type_keywords"] = word_list(p["typeKeywords"])
    if p.get("properties", "").strip():
        try:
            properties = json.loads(p["properties"])
        except json.JSONDecodeError:
            raise ParameterError("properties", "it must be a JSON object") from None
        if not isinstance(properties, dict):
            raise ParameterError("properties", "it must be a JSON object")
        fields["properties"] = properties
    if "title" in fields and not str(fields["title"]).strip():
        raise ParameterError("title", "an item needs a title")
    for key, most in (("title", 256), ("type", 128)):
        if len(str(fields.get(key, ""))) > most:
            raise ParameterError(key, f"at most {most} characters")
    return fields


def _filename(p: dict[str, str]) -> str | None:
    # REST JS sends filename, arcgis fileName
    return p.get("filename") or p.get("fileName") or None


def _own(user: str, owner: str) -> None:
    if user != owner:
        raise Forbidden(details=[f"The content of '{owner}' is not yours to change."])


async def _folder(request: Request, owner: str, folder: str | None) -> FolderRecord | None:
    if folder in (None, "", "/", "root"):
        return None
    found = await run_in_threadpool(content(request).items.folder, owner, folder)
    if found is None:
        raise NotFound("Folder does not exist or is inaccessible.", [f"Folder '{folder}' of '{owner}'."])
    return found


async def _owned_item(request: Request, user: str, owner: str, item_id: str) -> ItemRecord:
    _own(user, owner)
    item = await run_in_threadpool(content(request).items.owned, item_id, owner)
    if item is None:
        raise item_not_found(item_id)
    return item


# ---------------------------------------------------------------------------------------------------- routes
async def info(request: Request, p: ParamsDep, settings: SettingsDep) -> Response:
    # no currentVersion here: the arcgis client takes an info that has one for an ArcGIS Server's
    service = token_service(settings, portal_root(request))
    auth: dict[str, Any] = {"isTokenBasedSecurity": service is not None}
    if service is not None:
        auth["tokenServicesUrl"] = service
    return render({"owningSystemUrl": portal_root(request), "authInfo": auth}, request.state.f, "Portal info")


async def sharing_root(request: Request, p: ParamsDep) -> Response:
    return render({"currentVersion": PORTAL_VERSION}, request.state.f, "Sharing API")


async def roles(request: Request, p: ParamsDep, user: OptionalUserDep) -> Response:
    # every user here has the one built-in publisher role: no custom roles to list
    return render({"total": 0, "start": 1, "num": 0, "nextStart": -1, "roles": []}, request.state.f, "Roles")


async def portal_self(request: Request, p: ParamsDep, user: OptionalUserDep) -> Response:
    root = portal_root(request)
    host = root.split("://", 1)[-1]
    data: dict[str, Any] = {
        "id": PORTAL_ID, "name": "geotrain", "portalName": "geotrain", "isPortal": True,
        "portalMode": "singletenant", "currentVersion": PORTAL_VERSION, "portalHostname": host,
        "customBaseUrl": host, "urlKey": None, "allSSL": False, "supportsOAuth": True,
        "supportsHostedServices": False, "access": "private", "culture": "en", "region": "WO", "units": "metric",
        "authorizedCrossOriginDomains": [], "rotatorPanels": [], "defaultBasemap": {}, "defaultExtent": {},
        "helperServices": {"rasterAnalytics": {"url": str(request.base_url).rstrip("/") + SERVICE_PATH}},
        "created": 0, "modified": 0,
    }  # fmt: skip
    if user != ANONYMOUS:
        data["user"] = user_json(user, me=True)
    return render(data, request.state.f, "Portal")


async def community_self(request: Request, p: ParamsDep, user: UserDep, settings: SettingsDep) -> Response:
    data = user_json(user, me=True)
    if settings.auth == "token":
        account = await run_in_threadpool(accounts(request).get, user)
        if account is not None and account.stores is not None:
            data["geotrainDataStores"] = list(account.stores)
    if user == ANONYMOUS:
        data["role"] = "anonymous"
    return render(data, request.state.f, f"User {user}")


async def community_user(request: Request, p: ParamsDep, user: OptionalUserDep, username: str) -> Response:
    known = username == ANONYMOUS or await run_in_threadpool(accounts(request).get, username) is not None
    if not known:
        raise NotFound("User does not exist or is inaccessible.", [f"User '{username}'."])
    return render(user_json(username, me=username == user), request.state.f, f"User {username}")


async def user_content(
    request: Request, p: ParamsDep, user: UserDep, owner: str, folder: str | None = None
) -> Response:
    _own(user, owner)
    where = await _folder(request, owner, folder)
    store = content(request).items
    items = await run_in_threadpool(store.in_folder, owner, where.id if where else None)
    data = {
        "username": owner, "total": len(items), "start": 1, "num": len(items), "nextStart": -1,
        "currentFolder": folder_json(where) if where else None, "items": [item_json(i, user) for i in items],
        "folders": [] if where else [folder_json(f) for f in await run_in_threadpool(store.folders, owner)],
    }  # fmt: skip
    return render(data, request.state.f, f"Content of {owner}")


async def user_content_in_folder(request: Request, p: ParamsDep, user: UserDep, owner: str, folder: str) -> Response:
    return await user_content(request, p, user, owner, folder)


async def create_folder(request: Request, p: ParamsDep, user: UserDep, owner: str) -> Response:
    _own(user, owner)
    title = p.get("title", "").strip()
    if not title or len(title) > 256:
        raise ParameterError("title", "a folder needs a title of 1 to 256 characters")
    made = await run_in_threadpool(content(request).items.create_folder, owner, title)
    if made is None:
        raise GeotrainError("Unable to create folder.", [f"Folder '{title}' exists."])
    return render({"success": True, "folder": folder_json(made)}, request.state.f)


async def delete_folder(request: Request, p: ParamsDep, user: UserDep, owner: str, folder: str) -> Response:
    _own(user, owner)
    store = content(request)
    found = await _folder(request, owner, folder)
    assert found is not None
    removed = await run_in_threadpool(store.items.delete_folder, owner, found.id)
    for item in removed or []:
        await run_in_threadpool(store.delete, item)
    return render({"success": True, "folder": folder_json(found)}, request.state.f)


async def add_item(request: Request, p: ParamsDep, files: FilesDep, user: UserDep, owner: str,
                   folder: str | None = None) -> Response:  # fmt: skip
    _own(user, owner)
    where = await _folder(request, owner, folder or p.get("folder") or None)
    fields = item_fields(p)
    if not fields.get("type"):
        raise ParameterError("type", "an item needs a type, e.g. Deep Learning Package")
    upload = files.get("file")
    filename = _filename(p) or (upload.filename if upload else None)
    fields.setdefault("title", (filename or "").rsplit(".", 1)[0] or "untitled")
    fields["folder_id"] = where.id if where else None
    store = content(request)
    if p.get("multipart", "").lower() == "true":
        if not filename:
            raise ParameterError("filename", "a multipart upload names its file (filename)")
        item = await run_in_threadpool(store.start_multipart, owner, fields, filename)
    else:
        item = await run_in_threadpool(store.add, owner, fields, upload.file if upload else None, filename)
    return render({"success": True, "id": item.id, "folder": item.folder_id}, request.state.f)


async def add_part(request: Request, p: ParamsDep, files: FilesDep, user: UserDep, owner: str, item_id: str,
                   folder: str | None = None) -> Response:  # fmt: skip
    item = await _owned_item(request, user, owner, item_id)
    try:
        number = int(p.get("partNum", ""))
    except ValueError:
        raise ParameterError("partNum", "a whole number from 1") from None
    upload = files.get("file")
    if upload is None:
        raise ParameterError("file", "addPart sends the part as the multipart field 'file'")
    await run_in_threadpool(content(request).add_part, item, number, upload.file)
    return render({"success": True, "id": item.id}, request.state.f)


async def commit(request: Request, p: ParamsDep, user: UserDep, owner: str, item_id: str,
                 folder: str | None = None) -> Response:  # fmt: skip
    item = await _owned_item(request, user, owner, item_id)
    done = await run_in_threadpool(content(request).commit, item, item_fields(p))
    return render({"success": True, "id": done.id}, request.state.f)


async def status(request: Request, p: ParamsDep, user: UserDep, owner: str, item_id: str,
                 folder: str | None = None) -> Response:  # fmt: skip
    item = await _owned_item(request, user, owner, item_id)
    data: dict[str, Any] = {
        "itemId": item.id,
        "status": item.status,
        "statusMessage": item.status_message or item.status,
    }
    if item.status == "partial":
        data["statusMessage"] = "Parts are being added; commit joins them."
    return render(data, request.state.f)


async def update_item(request: Request, p: ParamsDep, files: FilesDep, user: UserDep, owner: str, item_id: str,
                      folder: str | None = None) -> Response:  # fmt: skip
    item = await _owned_item(request, user, owner, item_id)
    store = content(request)
    upload = files.get("file")
    if p.get("multipart", "").lower() == "true":
        filename = _filename(p) or item.name
        if not filename:
            raise ParameterError("filename", "a multipart update names its file (filename)")
        item = await run_in_threadpool(store.start_replacement, item, filename)
    elif upload is not None:
        item = await run_in_threadpool(store.replace_data, item, upload.file, p.get("filename") or upload.filename)
    fields = item_fields(p)
    if "properties" in fields and item.properties:
        # arcgis stamps job properties with update: keep what the item said besides
        fields["properties"] = {**item.properties, **fields["properties"]}
    if fields:
        updated = await run_in_threadpool(store.items.update, item.id, owner, fields)
        assert updated is not None
    return render({"success": True, "id": item.id}, request.state.f)


async def delete_item(request: Request, p: ParamsDep, user: UserDep, owner: str, item_id: str,
                      folder: str | None = None) -> Response:  # fmt: skip
    item = await _owned_item(request, user, owner, item_id)
    await run_in_threadpool(content(request).delete, item)
    return render({"success": True, "itemId": item.id}, request.state.f)


async def share_item(request: Request, p: ParamsDep, user: UserDep, owner: str, item_id: str,
                     folder: str | None = None) -> Response:  # fmt: skip
    item = await _owned_item(request, user, owner, item_id)
    everyone, org = p.get("everyone", "").lower() == "true", p.get("org", "").lower() == "true"
    access = "public" if everyone else "org" if org else "private"
    await run_in_threadpool(content(request).items.update, item.id, owner, {}, access=access)
    return render({"notSharedWith": [], "itemId": item.id}, request.state.f)


async def item(request: Request, p: ParamsDep, user: OptionalUserDep, item_id: str) -> Response:
    found = await run_in_threadpool(content(request).items.get, item_id, user)
    if found is None:
        raise item_not_found(item_id)
    return render(item_json(found, user), request.state.f, found.title)


async def item_data(request: Request, p: ParamsDep, user: OptionalUserDep, item_id: str) -> Response:
    store = content(request)
    found = await run_in_threadpool(store.items.get, item_id, user)
    if found is None:
        raise item_not_found(item_id)
    path = store.data_path(found)
    if path is None:
        raise NotFound("Item has no data.", [f"Item '{item_id}' has no file (its status is {found.status})."])
    return FileResponse(path, filename=found.name, media_type="application/octet-stream")


async def search(request: Request, p: ParamsDep, user: OptionalUserDep) -> Response:
    query = portal_search.parse(p.get("q", ""))
    try:
        start, num = int(p.get("start") or 1), int(p.get("num") or 10)
    except ValueError:
        raise ParameterError("start", "start and num are whole numbers") from None
    if not 1 <= start <= MAX_SEARCH_START or not 0 <= num <= 100:
        raise ParameterError("num", f"start is 1 to {MAX_SEARCH_START}, num 0 to 100")
    descending = p.get("sortOrder", "asc").lower() == "desc"
    total, found = await run_in_threadpool(
        content(request).items.search, query, user, start, num, p.get("sortField", "created"), descending
    )
    following = start + len(found)
    data = {"query": p.get("q", ""), "total": total, "start": start, "num": num,
            "nextStart": following if following <= total and found else -1,
            "results": [item_json(i, user) for i in found]}  # fmt: skip
    return render(data, request.state.f, "Search")


_FIELDS = (*ITEM_FIELDS, "partNum", "everyone", "org", "groups", "q", "start", "num", "sortField", "sortOrder")
# registered once, included under each of SHARING (app.py): building a route costs FastAPI ~2 ms, and the
# portal has some eighty
gp_route(router, "/")(sharing_root)
gp_route(router, "")(sharing_root)
gp_route(router, "/info")(info)
gp_route(router, "/portals/self/roles")(roles)
gp_route(router, "/portals/self")(portal_self)
gp_route(router, "/search", _FIELDS)(search)
gp_route(router, "/community/self")(community_self)
gp_route(router, "/community/users/{username}")(community_user)
gp_route(router, "/content/items/{item_id}")(item)
gp_route(router, "/content/items/{item_id}/data")(item_data)
users = "/content/users/{owner}"
gp_route(router, f"{users}/createFolder", _FIELDS)(create_folder)
for _where in (users, f"{users}/{{folder}}"):
    gp_route(router, f"{_where}/addItem", _FIELDS)(add_item)
    gp_route(router, f"{_where}/items/{{item_id}}/addPart", _FIELDS)(add_part)
    gp_route(router, f"{_where}/items/{{item_id}}/commit", _FIELDS)(commit)
    gp_route(router, f"{_where}/items/{{item_id}}/status", _FIELDS)(status)
    gp_route(router, f"{_where}/items/{{item_id}}/update", _FIELDS)(update_item)
    gp_route(router, f"{_where}/items/{{item_id}}/delete", _FIELDS)(delete_item)
    gp_route(router, f"{_where}/items/{{item_id}}/share", _FIELDS)(share_item)
gp_route(router, f"{users}/{{folder}}/delete", _FIELDS)(delete_folder)
gp_route(router, users)(user_content)
gp_route(router, f"{users}/{{folder}}")(user_content_in_folder)
