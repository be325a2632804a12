"""``create_app`` wires the service, API and pages into one FastAPI app;
``serve`` runs it with uvicorn.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from fastapi_offline import FastAPIOffline

from seglab import __version__
from seglab.errors import RecipeError
from seglab.serve.access import CrossSiteGuard, _access, is_loopback, new_open_token
from seglab.serve.api import _api
from seglab.serve.auth import Accounts
from seglab.serve.config import ServerSpec
from seglab.serve.limits import UploadLimit
from seglab.serve.pages import WEB, _errors, _pages
from seglab.serve.service import LoadedModel, Service, _load
from seglab.serve.store import Store


def create_app(models: Sequence[str | os.PathLike[str]] | Sequence[LoadedModel],
               data_dir: str | os.PathLike[str] = "seglab-data", *, db_url: str | None = None,
               store_url: str | None = None, spec: ServerSpec | None = None,
               host: str = "127.0.0.1") -> FastAPI:
    """The FastAPI application serving ``models`` (model folders or loaded models).

    ``db_url`` and ``store_url`` (item images: a folder or fsspec URL) are what replicas
    share; ``data_dir`` holds the SQLite file and the images when they are not given.
    ``host`` is where it will listen: beyond loopback, sign-in is on (``spec.auth``)."""
    spec = spec or ServerSpec()
    open_mode = spec.auth == "off" or (spec.auth == "auto" and is_loopback(host))
    if open_mode and not is_loopback(host):
        raise RecipeError(f"auth: off is for loopback only; {host} is reachable from other "
                          "machines (create users with seglab users add)")
    loaded = [m if isinstance(m, LoadedModel) else _load(Path(m)) for m in models]
    names = [m.name for m in loaded]
    for i, m in enumerate(loaded):  # two folders of the same recipe get distinct names
        if names.count(m.name) > 1:
            m.name = f"{m.name}-{i + 1}"
    service = Service(loaded, Store(data_dir, db_url, files=store_url), spec)
    # /docs and /redoc from assets inside an installed package (fastapi-offline vendors
    # Swagger UI and ReDoc, MIT): the API docs work with no network, like every page.
    app = FastAPIOffline(title="seglab", version=__version__,
                         description="U-Net segmentation: steel defect check and jewellery "
                                     "background removal.")
    app.state.service = service
    app.state.accounts = Accounts(service.store)
    app.state.open_mode = open_mode
    app.state.open_csrf = new_open_token()
    app.add_middleware(UploadLimit, max_bytes=int(spec.max_upload_mb * 1e6))
    app.add_middleware(CrossSiteGuard)
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")
    templates = Jinja2Templates(directory=WEB / "templates")
    templates.env.globals.update(version=__version__, open_mode=open_mode)
    _errors(app, templates)
    _access(app, app.state.accounts, templates)
    _api(app, service)
    _pages(app, service, templates)
    return app


def serve(models: Sequence[str | os.PathLike[str]], *, host: str = "127.0.0.1",
          port: int = 8000, data_dir: str | os.PathLike[str] = "seglab-data",
          db_url: str | None = None, store_url: str | None = None,
          spec: ServerSpec | None = None) -> None:
    """Load the models and serve until interrupted."""
    import torch
    import uvicorn

    spec = spec or ServerSpec()
    # Each inference slot gets its share of the cores instead of all slots fighting over all.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec.max_concurrent))
    app = create_app(models, data_dir, db_url=db_url, store_url=store_url, spec=spec,
                     host=host)
    if not app.state.open_mode and not app.state.accounts.users():
        print("sign-in is on and there are no users yet: create one with "
              "`seglab users add NAME --role admin` with this --data-dir or --db")
    uvicorn.run(app, host=host, port=port, log_level="info")
