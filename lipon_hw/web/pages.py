"""The operator's pages: `/` the list of runs, `/runs/{id}` a run's live page, `/queue`
the run queue (its lanes, submit, move, cancel), `/samples` the samples and `/samples/{id}`
one sample's film stack and genealogy, and their scripts and style under `/static/`
(package data, `lipon_hw/web/static/`).

The pages are the same for everyone and hold no data: they read everything from the REST
API and the run's WebSocket with the token the user types (kept in the tab's
sessionStorage), so serving them needs no role. Nothing is fetched from elsewhere.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = files("lipon_hw.web") / "static"


def make_router() -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    @router.get("/runs/{run_id}", include_in_schema=False)
    def run_page(run_id: int) -> FileResponse:
        return FileResponse(str(STATIC / "run.html"))

    @router.get("/queue", include_in_schema=False)
    def queue_page() -> FileResponse:
        return FileResponse(str(STATIC / "queue.html"))

    @router.get("/samples", include_in_schema=False)
    @router.get("/samples/{sample_id:path}", include_in_schema=False)
    def samples_page(sample_id: str = "") -> FileResponse:
        return FileResponse(str(STATIC / "samples.html"))

    return router


def mount(app) -> None:
    """The pages' router and `/static/` on `app`."""
    app.include_router(make_router())
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
