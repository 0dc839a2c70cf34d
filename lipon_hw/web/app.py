"""The web application of `lipon-hw serve`: `create_app(data_dir, security)`.

One FastAPI app per served data directory; its routers come from their modules (`runs`:
the REST API over the store; `live`: the engines' events in and the browsers' WebSocket
out, through one `Hub`). `app.state` holds the data directory, the `Security` that every
route's `require(role)` asks, and the hub. Every error is `{"detail": one sentence}`, a
request's bad field included (422), and a store that cannot be read now is 503.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from lipon_hw import __version__
from lipon_hw.errors import LiponError
from lipon_hw.web import cells, live, pages, queue, runs, screening
from lipon_hw.web.security import Security, require


def create_app(data_dir: str | Path, security: Security,
               station_path: str | None = None) -> FastAPI:
    app = FastAPI(title="lipon-hw", version=__version__, docs_url="/api/docs",
                  openapi_url="/api/openapi.json", redoc_url=None)
    app.state.data_dir = Path(data_dir)
    app.state.security = security
    app.state.hub = live.Hub()
    app.state.station_path = station_path  # what the queue validates against and runs on
    app.state.queue_runner = None  # `lipon-hw serve` starts one (`queue_runner`)
    app.include_router(runs.router)
    app.include_router(cells.router)
    app.include_router(queue.router)
    app.include_router(screening.router)
    app.include_router(live.make_router(app.state.hub, require("engine"), require("viewer")))
    pages.mount(app)
    app.add_exception_handler(RequestValidationError, _bad_field)
    app.add_exception_handler(LiponError, _store_trouble)
    return app


async def _bad_field(_request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = " ".join(str(p) for p in first.get("loc", ()))
    return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)


async def _store_trouble(_request: Request, exc: LiponError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503)
