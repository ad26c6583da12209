"""Responses in the format the client asked for: f=json, f=pjson, or a readable HTML page (the default)."""

from __future__ import annotations

import html
import json
from typing import Any

from fastapi.responses import HTMLResponse, JSONResponse, Response

FORMATS = ("json", "pjson", "html")


def response_format(value: str | None) -> str:
    text = (value or "html").strip().lower()
    return text if text in FORMATS else "json"


def render(data: Any, f: str, title: str = "geotrain", body_html: str = "") -> Response:
    if f == "json":
        return JSONResponse(data)
    if f == "pjson":
        return Response(json.dumps(data, indent=2), media_type="application/json")
    return HTMLResponse(page(title, body_html + _json_block(data)))


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><title>"
        + html.escape(title)
        + "</title><style>body{font-family:sans-serif;margin:1em;max-width:70em}"
        "pre{background:#f4f4f4;padding:1em;overflow:auto}td,th{padding:.2em .6em;vertical-align:top;text-align:left}"
        "table{display:block;overflow-x:auto}input[type=text],textarea{width:40em;max-width:100%}"
        "svg.chart,img.picture{width:100%;max-width:48em;height:auto}progress{width:20em;max-width:80%}"
        "td,h2,p,li{overflow-wrap:anywhere}td.kind{overflow-wrap:normal;white-space:nowrap}"
        "</style></head><body><h2>" + html.escape(title) + "</h2>" + body + "</body></html>"
    )


def _json_block(data: Any) -> str:
    return "<pre>" + html.escape(json.dumps(data, indent=2)) + "</pre>"


def submit_form(parameters: list[dict[str, Any]], action: str) -> str:
    """The Services Directory's 'Submit Job' form, so a person can start a job from a browser."""
    rows = []
    for p in parameters:
        if p["direction"] != "esriGPParameterDirectionInput":
            continue
        name = html.escape(p["name"])
        default = "" if p["defaultValue"] is None else json.dumps(p["defaultValue"]).strip('"')
        choices = p.get("choiceList") or (["true", "false"] if p.get("dataType") == "GPBoolean" else None)
        if choices:
            options = "".join(
                f"<option{' selected' if c == default else ''}>{html.escape(c)}</option>" for c in ["", *choices]
            )
            field = f"<select name='{name}'>{options}</select>"
        else:
            field = f"<input type='text' name='{name}' value='{html.escape(default)}'>"
        required = " *" if p["parameterType"] == "esriGPParameterTypeRequired" else ""
        kind = html.escape(str(p.get("dataType", "")))
        described = f"<br><small>{html.escape(str(p['description']))}</small>" if p.get("description") else ""
        rows.append(
            f"<tr><td>{html.escape(p['displayName'])}{required}<br><code>{name}</code> <small>{kind}</small>"
            f"{described}</td><td>{field}</td></tr>"
        )
    return (
        f"<form method='post' action='{html.escape(action)}'><table>{''.join(rows)}</table>"
        "<input type='hidden' name='f' value='html'><button type='submit'>Submit Job</button></form>"
    )
