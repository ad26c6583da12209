"""The GP REST protocol for TrainDeepLearningModel: service, task, submitJob, jobs and their parts."""

from __future__ import annotations

import html
import zipfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from geotrain.api import pages, portal
from geotrain.api.auth import UserDep, token_of
from geotrain.api.deps import ParamsDep, QueueDep, gp_route
from geotrain.api.render import page, render, response_format, submit_form
from geotrain.api.tokens import SECURED, GrantedDep
from geotrain.config import Settings
from geotrain.errors import GeotrainError, NotFound, ParameterError
from geotrain.jobs.accounts import ANONYMOUS
from geotrain.jobs.queue import JobRecord, Queue
from geotrain.jobs.tables import JobStatus
from geotrain.portal.content import Content
from geotrain.publish.portal import EmbeddedPortal, item_source
from geotrain.stores import StorePathError, resolve
from geotrain.task import metadata, model_info, params, submission

service_router = APIRouter()
task_router = APIRouter()
query_router = APIRouter()
jobs_router = APIRouter()
# the package's pictures a job page shows (ModelCharacteristics/ in the .dlpk)
PICTURES = ("loss_graph.png", "show_results.png")


@gp_route(service_router, "/arcgis/rest/services", dependencies=SECURED)
@gp_route(service_router, "/arcgis/rest/services/System", dependencies=SECURED)
async def services(request: Request, p: ParamsDep) -> Response:
    top = request.url.path.rstrip("/").endswith("/services")
    data: dict[str, Any] = {
        "currentVersion": metadata.CURRENT_VERSION,
        "folders": ["System"] if top else [],
        "services": [] if top else [{"name": "System/RasterAnalysisTools", "type": "GPServer"}],
    }
    return render(
        data,
        request.state.f,
        "Services Directory",
        _links(request.url.path.rstrip("/"), ["System"] if top else ["RasterAnalysisTools/GPServer"]),
    )


@gp_route(service_router, metadata.SERVICE_PATH, dependencies=SECURED)
async def gp_service(request: Request, p: ParamsDep) -> Response:
    return render(
        metadata.service_resource(),
        request.state.f,
        "RasterAnalysisTools (GPServer)",
        _links(metadata.SERVICE_PATH, [metadata.TASK_NAME]),
    )


def _links(base: str, names: list[str]) -> str:
    items = "".join(f"<li><a href='{html.escape(base)}/{html.escape(n)}'>{html.escape(n)}</a></li>" for n in names)
    return f"<ul>{items}</ul>"


@gp_route(task_router, "", dependencies=SECURED)
async def task(request: Request, p: ParamsDep) -> Response:
    help_url = str(request.base_url) + "docs"
    resource = metadata.task_resource(help_url)
    path = request.url.path.rstrip("/")
    form = submit_form(resource["parameters"], path + "/submitJob")
    return render(resource, request.state.f, "Train Deep Learning Model (Task)", form)


def _embedded_portal(request: Request, settings: Settings) -> EmbeddedPortal | None:
    """This server's own portal, unless packages go to an external one (whose items the worker checks)."""
    return None if settings.portal_url else EmbeddedPortal(request.app.state.content)


@gp_route(task_router, "/submitJob", params.INPUT_NAMES)
async def submit_job(request: Request, p: ParamsDep, queue: QueueDep, settings: GrantedDep, user: UserDep) -> Response:
    raw = {name: p.get(name, "") for name in params.INPUT_NAMES}
    parsed = params.parse(raw)
    await run_in_threadpool(submission.check, parsed, settings, user, _embedded_portal(request, settings))
    requires = parsed.processor_label()
    if requires is not None:
        await run_in_threadpool(_check_some_worker_runs, queue, requires, settings)
    # an external portal without publishing credentials of our own is written to as the submitter
    borrowed = settings.portal_url and not settings.portal_username and parsed.output_name.name is not None
    token = token_of(request, p) if borrowed else None
    job = await run_in_threadpool(queue.submit, metadata.TASK_NAME, user, raw, settings.max_attempts, requires, token)
    if request.state.f == "html":
        return RedirectResponse(f"jobs/{job.id}?f=html", status_code=303)
    return render({"jobId": job.id, "jobStatus": job.status.value}, request.state.f)


def _check_some_worker_runs(queue: Queue, label: str, settings: Settings) -> None:
    """A job for GPU (or CPU) workers only is refused at once when no such worker is running, rather than
    left waiting for one."""
    window = max(60.0, settings.heartbeat_seconds * 4, settings.poll_seconds * 4)
    workers = queue.live_workers(window)
    if not any(label in labels for _, labels in workers):
        seen = "; ".join(f"{w} ({', '.join(labels)})" for w, labels in workers) or "none"
        raise ParameterError(
            "context",
            f"processorType {label.upper()}: no running worker has the '{label}' label (workers seen in the last "
            f"{window:.0f} s: {seen}). Start `geotrain worker` on a host with one, or leave processorType out.",
        )


@gp_route(query_router, "", dependencies=SECURED)
async def query_task(request: Request, p: ParamsDep) -> Response:
    resource = metadata.query_task_resource(str(request.base_url) + "docs")
    form = submit_form(resource["parameters"], request.url.path.rstrip("/") + "/submitJob")
    return render(resource, request.state.f, "Query Deep Learning Model Info (Task)", form)


@gp_route(query_router, "/submitJob", (model_info.INPUT,))
async def query_submit(
    request: Request, p: ParamsDep, queue: QueueDep, settings: GrantedDep, user: UserDep
) -> Response:
    """The model's settings are read at once (no worker, no torch) and kept as a finished job, which the
    client then polls and reads like ArcGIS's. A bad ``model`` gets the error envelope, as at any submit."""
    value = p.get(model_info.INPUT, "")
    items = item_source(_embedded_portal(request, settings), user, settings.jobs_dir)
    info = await run_in_threadpool(model_info.model_info, value, settings, items)
    inputs = {model_info.INPUT: value}
    job = await run_in_threadpool(queue.record, model_info.TASK, user, inputs, {model_info.RESULT: info}, None)
    if request.state.f == "html":
        return RedirectResponse(f"jobs/{job.id}?f=html", status_code=303)
    return render({"jobId": job.id, "jobStatus": job.status.value}, request.state.f)


def _truthy(value: str | None, default: bool = True) -> bool:
    return default if value is None or value == "" else value.strip().lower() not in ("false", "0", "no")


def job_json(job: JobRecord, return_messages: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {"jobId": job.id, "jobStatus": job.status.value}
    if job.status == JobStatus.SUCCEEDED and job.results is not None:
        data["results"] = {name: {"paramUrl": f"results/{name}"} for name in job.results}
    names = params.INPUT_NAMES if job.task == metadata.TASK_NAME else tuple(job.inputs)
    data["inputs"] = {name: {"paramUrl": f"inputs/{name}"} for name in names}
    if job.status == JobStatus.EXECUTING and job.progress_percentage is not None:
        data["progress"] = {
            "type": "default",
            "message": job.progress_message or "",
            "percentage": job.progress_percentage,
        }
    if return_messages:
        data["messages"] = [{"type": m.type, "description": m.description} for m in job.messages]
    return data


def _package_file(request: Request, job: JobRecord, user: str | None) -> Path | None:
    """The local .dlpk a succeeded job wrote: in its file share, or the embedded portal's item file."""
    value = (job.results or {}).get("out_item")
    if job.status != JobStatus.SUCCEEDED or not isinstance(value, dict):
        return None
    if value.get("uri"):
        try:
            path = resolve(str(value["uri"]), request.app.state.settings.stores).local
        except StorePathError:
            return None
        return path if path.is_file() else None
    content: Content = request.app.state.content
    item = content.items.get(str(value.get("itemId", "")), user or ANONYMOUS) if value.get("itemId") else None
    return content.data_path(item) if item is not None else None


def _job_html(request: Request, job: JobRecord, epochs: list[dict[str, Any]], user: str | None, p: ParamsDep) -> str:
    token = token_of(request, p)
    keep = f"?token={token}" if token else ""
    local = _package_file(request, job, user)
    package, pictures = None, []
    if local is not None:
        value = (job.results or {}).get("out_item") or {}
        item = value.get("itemId") if isinstance(value, dict) else None
        package = f"{job.id}/package{keep}" if not item else f"{portal.ITEMS}/{item}/data{keep}"
        pictures = [f"{job.id}/package/{name}{keep}" for name in PICTURES]
    return pages.job_page(job, epochs, package, pictures, token)


@jobs_router.get("", include_in_schema=False)
async def jobs_list(request: Request, queue: QueueDep, user: UserDep) -> Response:
    """The user's jobs, newest first (geotrain's own; ArcGIS lists jobs only to administrators)."""
    f = response_format(request.query_params.get("f"))
    jobs = await run_in_threadpool(queue.of_owner, user)
    data = {
        "jobs": [
            {"jobId": j.id, "jobStatus": j.status.value, "modelType": j.inputs.get("model_type"),
             "submitted": j.submitted_at.isoformat() if j.submitted_at else None, "duration": pages.duration(j)}
            for j in jobs
        ]
    }  # fmt: skip
    base = request.url.path.rstrip("/")
    return render(data, f, "Jobs", pages.jobs_page(jobs, base, token_of(request, dict(request.query_params))))


@gp_route(jobs_router, "/{job_id}", ("returnMessages",))
async def job_status(request: Request, job_id: str, p: ParamsDep, queue: QueueDep, user: UserDep) -> Response:
    job = await run_in_threadpool(queue.get, job_id, user)
    data = job_json(job, _truthy(p.get("returnMessages")))
    if request.state.f != "html":
        return render(data, request.state.f)
    epochs = await run_in_threadpool(queue.epochs, job_id, user)
    return HTMLResponse(page(f"Job {job.id}", _job_html(request, job, epochs, user, p)))


@jobs_router.get("/{job_id}/chart.svg", include_in_schema=False)
async def job_chart(request: Request, job_id: str, queue: QueueDep, user: UserDep) -> Response:
    """The job page's loss chart, drawn anew as epochs finish."""
    job = await run_in_threadpool(queue.get, job_id, user)
    epochs = await run_in_threadpool(queue.epochs, job_id, user)
    return Response(pages.loss_chart(epochs, pages.max_epochs(job)), media_type="image/svg+xml")


@jobs_router.get("/{job_id}/package", include_in_schema=False)
async def job_package(request: Request, job_id: str, queue: QueueDep, user: UserDep) -> Response:
    """The .dlpk a succeeded job wrote to its file share, to download."""
    job = await run_in_threadpool(queue.get, job_id, user)
    local = _package_file(request, job, user)
    if local is None:
        raise NotFound(f"Job '{job_id}' has no package to download.", [f"The job is {job.status.value}."])
    return FileResponse(local, media_type="application/octet-stream", filename=local.name)


@jobs_router.get("/{job_id}/package/{picture}", include_in_schema=False)
async def job_picture(request: Request, job_id: str, picture: str, queue: QueueDep, user: UserDep) -> Response:
    """One of the package's pictures (the loss graph, the show-results picture)."""
    job = await run_in_threadpool(queue.get, job_id, user)
    local = _package_file(request, job, user)
    if local is None or picture not in PICTURES:
        raise NotFound(f"No picture '{picture}' for job '{job_id}'.", [f"Pictures: {', '.join(PICTURES)}"])
    try:
        with zipfile.ZipFile(local) as zf:
            data = zf.read(f"ModelCharacteristics/{picture}")
    except (KeyError, zipfile.BadZipFile):
        raise NotFound(f"The package of job '{job_id}' has no {picture}.") from None
    return Response(data, media_type="image/png")


@gp_route(jobs_router, "/{job_id}/epochs")
async def job_epochs(request: Request, job_id: str, p: ParamsDep, queue: QueueDep, user: UserDep) -> Response:
    """geotrain's own: the job's finished epochs as numbers (losses, metrics, timing), for charts."""
    epochs = await run_in_threadpool(queue.epochs, job_id, user)
    return render({"jobId": job_id, "epochs": epochs}, request.state.f, f"Job {job_id}: epochs")


@gp_route(jobs_router, "/{job_id}/cancel", ("returnMessages",))
async def cancel_job(request: Request, job_id: str, p: ParamsDep, queue: QueueDep, user: UserDep) -> Response:
    job = await run_in_threadpool(queue.request_cancel, job_id, user)
    if request.state.f == "html":  # the job page's cancel button: back to the page
        token = token_of(request, p)
        return RedirectResponse(f"../{job.id}?f=html{f'&token={token}' if token else ''}", status_code=303)
    return render(job_json(job, _truthy(p.get("returnMessages"))), request.state.f, f"Job {job.id}")


@gp_route(jobs_router, "/{job_id}/results/{name}")
async def job_result(
    request: Request, job_id: str, name: str, p: ParamsDep, queue: QueueDep, user: UserDep
) -> Response:
    job = await run_in_threadpool(queue.get, job_id, user)
    if job.status != JobStatus.SUCCEEDED or not job.results:
        raise GeotrainError(
            "Unable to complete operation.", [f"Results are not available: the job is {job.status.value}."]
        )
    if name not in job.results:
        raise NotFound(f"Parameter '{name}' is not a result of this job.", [f"Results: {', '.join(job.results)}"])
    spec = metadata.parameter(name, job.task) or {"dataType": "GPString"}
    value = job.results[name]
    if isinstance(value, dict) and value.get("itemId") and not value.get("url"):
        # an item of the embedded portal: its url is this server's, as the client reached it
        value = {
            **value,
            "url": f"{str(request.base_url).rstrip('/')}{portal.ITEMS}/{value['itemId']}",
        }
    data = {"paramName": name, "dataType": spec["dataType"], "value": value}
    return render(data, request.state.f, f"Result {name}")


@gp_route(jobs_router, "/{job_id}/inputs/{name}")
async def job_input(request: Request, job_id: str, name: str, p: ParamsDep, queue: QueueDep, user: UserDep) -> Response:
    job = await run_in_threadpool(queue.get, job_id, user)
    spec = metadata.parameter(name, job.task)
    if job.task == model_info.TASK and spec is not None and name in job.inputs:
        return render({"paramName": name, "dataType": "GPString", "value": job.inputs[name]}, request.state.f)
    if spec is None or name not in params.INPUT_NAMES:
        raise NotFound(f"Parameter '{name}' is not an input of {job.task}.")
    data = {"paramName": name, "dataType": spec["dataType"], "value": params.echo(params.parse(job.inputs), name)}
    return render(data, request.state.f, f"Input {name}")


@service_router.get("/")
async def index() -> Response:
    return HTMLResponse(
        page(
            "geotrain",
            "<p>ArcGIS-compatible deep learning training.</p>"
            f"<ul><li><a href='{metadata.SERVICE_PATH}'>GPServer</a></li>"
            f"<li><a href='{metadata.SERVICE_PATH}/{metadata.TASK_NAME}'>{metadata.TASK_NAME}</a></li></ul>",
        )
    )
