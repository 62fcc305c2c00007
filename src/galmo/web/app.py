"""The explorer's web application: ``create_app(run_dirs) -> FastAPI`` (served by ``galmo serve``).

Pages are rendered on the server with Jinja2 (``templates/``); ``static/`` holds the CSS and the few
lines of JavaScript (the queue's keyboard shortcuts, the embedding map's canvas). Nothing is loaded from another site: it works
offline. Every list is paginated (:data:`galmo.web.config.PAGE_SIZE` galaxies a page).

Routes: ``/`` the runs; ``/run/NAME`` its overview (metrics, figures, fine-tuning before/after);
``/run/NAME/groups[/G]``, ``/run/NAME/predictions``, ``/run/NAME/outliers``, ``/run/NAME/queue``,
``/run/NAME/labels`` (+ ``.csv`` / ``.parquet`` export), ``/run/NAME/map`` (the embedding map; its points
from ``/api/run/NAME/map``), ``/run/NAME/upload`` (an image → prediction and neighbours); ``/galaxy/ID``;
``/search?q=``; ``/thumb/BAND/ID`` (PNG); the JSON API of the queue under ``/api/run/NAME/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from galmo.core.errors import GalmoError
from galmo.report import fmt
from galmo.web.config import PAGE_SIZE, QUEUE_ORDERS
from galmo.web.explorer import Explorer
from galmo.web.runs import NotFound, page_of

HERE = Path(__file__).parent
log = logging.getLogger("galmo.web")
PRELOAD = 2  # queue items sent ahead (the current one and the next, preloaded)


class LabelIn(BaseModel):
    id: str
    decision: str = "class"
    label: int | None = None
    who: str | None = None
    order: str = "confidence"


class UndoIn(BaseModel):
    who: str | None = None
    order: str = "confidence"


def create_app(run_dirs, data=None, who=None, thumb_cache=None) -> FastAPI:
    """The explorer of the run folders ``run_dirs`` (GalmoError for a folder that is not a run)."""
    ex = Explorer(run_dirs, data=data, who=who, thumb_cache=thumb_cache)
    app = FastAPI(title="galmo explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.explorer = ex
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["fmt"] = fmt
    templates.env.globals.update(runs=ex.runs, page_size=PAGE_SIZE, orders=QUEUE_ORDERS)
    app.state.templates = templates
    _errors(app, templates)
    _pages(app, ex, templates)
    _lists(app, ex, templates)
    _queue(app, ex, templates)
    _map_and_upload(app, ex, templates)
    return app


def _page(templates, request: Request, name: str, status: int = 200, **ctx):
    return templates.TemplateResponse(request, name, ctx, status_code=status)


def _errors(app: FastAPI, templates) -> None:
    """4xx pages (or JSON under /api/) with a message for bad input; never a traceback."""

    def answer(request: Request, status: int, message: str):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return _page(templates, request, "error.html.j2", status, status_code=status, message=message)

    @app.exception_handler(GalmoError)
    async def galmo_error(request: Request, e: GalmoError):
        return answer(request, 404 if isinstance(e, NotFound) else 400, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return answer(request, e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        msg = "; ".join(f"{'.'.join(map(str, err.get('loc', ())))}: {err.get('msg')}" for err in e.errors())
        return answer(request, 400, f"bad request ({msg})")

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception):
        log.exception("galmo serve: %s failed", request.url.path)
        return answer(request, 500, f"internal error ({type(e).__name__}); see the server's log")


def _pages(app: FastAPI, ex: Explorer, templates) -> None:
    @app.get("/")
    def index(request: Request):
        return _page(templates, request, "index.html.j2")

    @app.get("/run/{name}")
    def run_overview(request: Request, name: str):
        run = ex.run(name)
        return _page(templates, request, "run.html.j2", run=run, metrics=flat_metrics(run.metrics))

    @app.get("/run/{name}/file/{path:path}")
    def run_file(name: str, path: str):
        return FileResponse(inside(ex.run(name).path, path))

    @app.get("/galaxy/{ident:path}")
    def galaxy(request: Request, ident: str):
        return _page(templates, request, "galaxy.html.j2", g=ex.galaxy(ident))

    @app.get("/search")
    def search(request: Request, q: str = ""):
        q = q.strip()
        if q and ex.known(q):
            return RedirectResponse(f"/galaxy/{quote(q)}", status_code=303)
        return _page(templates, request, "search.html.j2", q=q, hits=ex.search(q) if q else [])

    @app.get("/thumb/{band}/{ident:path}")
    def thumb(band: str, ident: str):
        return FileResponse(ex.thumbs.path(ident, band), media_type="image/png",
                            headers={"Cache-Control": "max-age=86400"})


def _lists(app: FastAPI, ex: Explorer, templates) -> None:
    @app.get("/run/{name}/groups")
    def groups(request: Request, name: str):
        run = _need(ex.run(name), "groups")
        return _page(templates, request, "groups.html.j2", run=run, summary=run.group_summary)

    @app.get("/run/{name}/groups/{group}")
    def group(request: Request, name: str, group: int, page: int = 1):
        run = _need(ex.run(name), "groups")
        if group not in run.group_members:
            raise NotFound(f"run {name} has no group {group}")
        pos, pager = page_of(run.group_members[group], page, PAGE_SIZE)
        return _page(templates, request, "group.html.j2", run=run, group=group, rows=run.groups.rows(pos),
                     pager=pager, summary=next(s for s in run.group_summary if s["group"] == group))

    @app.get("/run/{name}/predictions")
    def predictions(request: Request, name: str, page: int = 1, order: str = "confidence"):
        run = _need(ex.run(name), "supervised")
        pos, pager = page_of(run.order(order) if run.class_names else range(len(run.predictions)), page, PAGE_SIZE)
        items = run.items(pos) if run.class_names else run.predictions.rows(pos)
        return _page(templates, request, "predictions.html.j2", run=run, items=items, pager=pager, order=order)

    @app.get("/run/{name}/outliers")
    def outliers(request: Request, name: str, page: int = 1):
        run = _need(ex.run(name), "outliers")
        pos, pager = page_of(range(len(run.outliers)), page, PAGE_SIZE)
        return _page(templates, request, "outliers.html.j2", run=run, rows=run.outliers.rows(pos), pager=pager)


def _queue(app: FastAPI, ex: Explorer, templates) -> None:
    """The expert queue: the page, its JSON API (label, undo, next items) and the exports."""

    @app.get("/run/{name}/queue")
    def queue_page(request: Request, name: str, order: str = "confidence"):
        run = ex.run(name)
        items, progress = run.queue(order, PRELOAD)
        return _page(templates, request, "queue.html.j2", run=run, items=items, progress=progress, order=order,
                     who=ex.who or "")

    @app.get("/api/run/{name}/queue")
    def queue_next(name: str, order: str = "confidence", n: int = PRELOAD):
        items, progress = ex.run(name).queue(order, max(1, min(n, 50)))
        return {"items": items, "progress": progress}

    @app.post("/api/run/{name}/labels")
    def add_label(name: str, body: LabelIn):
        run = ex.run(name)
        if run.labels is None or run.predictions.row(body.id) is None:
            raise NotFound(f"galaxy {body.id!r} is not in the predictions of run {name}")
        event = run.labels.add(body.id, body.decision, body.label, body.who or ex.who)
        items, progress = run.queue(body.order, PRELOAD)
        return {"event": event, "items": items, "progress": progress}

    @app.post("/api/run/{name}/undo")
    def undo(name: str, body: UndoIn):
        run = _labelled(ex.run(name))
        undone = run.labels.undo(body.who or None)
        items, progress = run.queue(body.order, PRELOAD)
        return {"undone": undone, "items": items, "progress": progress}

    @app.get("/run/{name}/labels")
    def labels(request: Request, name: str, page: int = 1):
        run = _labelled(ex.run(name))
        table = run.labels.table().sort_values("seq", ascending=False)
        pos, pager = page_of(range(len(table)), page, PAGE_SIZE)
        return _page(templates, request, "labels.html.j2", run=run, rows=table.iloc[pos].to_dict("records"),
                     pager=pager)

    @app.get("/run/{name}/expert_labels.{ext}")
    def export(name: str, ext: str):
        run = _labelled(ex.run(name))
        if ext not in ("csv", "parquet"):
            raise NotFound("export as expert_labels.csv or expert_labels.parquet")
        path = run.labels.export(run.path / f"expert_labels.{ext}")
        return FileResponse(path, filename=path.name)


def _map_and_upload(app: FastAPI, ex: Explorer, templates) -> None:
    """The embedding map (its page and points) and the upload of an image (prediction and neighbours)."""
    from galmo.web.upload import MAX_UPLOAD, TYPES, analyse, read_upload

    @app.get("/run/{name}/map")
    def map_page(request: Request, name: str, colour: str | None = None):
        run = _need(ex.run(name), "embeddings")
        return _page(templates, request, "map.html.j2", run=run, colour=colour or "")

    @app.get("/api/run/{name}/map")
    def map_points(name: str, colour: str | None = None):
        return ex.map_points(_need(ex.run(name), "embeddings"), colour)

    def form(request: Request, run, status: int = 200, **ctx):
        return _page(templates, request, "upload.html.j2", status, run=run, types=", ".join(TYPES),
                     limit_mib=MAX_UPLOAD // 2 ** 20, **ctx)

    @app.get("/run/{name}/upload")
    def upload_form(request: Request, name: str):
        return form(request, _uploadable(ex.run(name)))

    @app.post("/run/{name}/upload")
    async def upload(request: Request, name: str):
        run = _uploadable(ex.run(name))
        try:
            filename, data = await read_upload(request)
            result = await run_in_threadpool(analyse, ex, run, filename, data)
        except GalmoError as e:
            return form(request, run, 404 if isinstance(e, NotFound) else 400, error=str(e))
        return form(request, run, result=result)


def _uploadable(run):
    if not (run.can_predict or run.embeddings_file is not None):
        raise NotFound(f"run {run.name} has neither a model to predict an image nor embeddings to place it")
    return run


def _need(run, kind: str):
    if kind not in run.kinds:
        raise NotFound(f"run {run.name} has no {kind} (it has: {', '.join(run.kinds) or 'report files only'})")
    return run


def _labelled(run):
    if run.labels is None:
        raise NotFound(f"run {run.name} has no class predictions to label")
    return run


def inside(root: Path, rel: str) -> Path:
    """``root/rel`` when it is a file inside ``root`` (no ``..``, no link out, no hidden file); else NotFound."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or any(p.startswith(".") for p in path.relative_to(root).parts):
        raise NotFound(f"{rel}: not a file of this run")
    if not path.is_file():
        raise NotFound(f"{rel}: no such file in this run")
    return path


def flat_metrics(metrics: dict, prefix: str = "", limit: int = 80) -> list[tuple[str, object]]:
    """The scalar metrics (nested keys joined by '.'), at most ``limit``; lists and tables left to the figures."""
    out: list[tuple[str, object]] = []
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += flat_metrics(v, key + ".", limit)
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out.append((key, v))
    return out[:limit]
