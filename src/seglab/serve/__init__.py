"""The web service: upload limits, the service and its store, the JSON API, the HTML
pages and ``serve`` (FastAPI + uvicorn, SQLite or PostgreSQL)."""

from seglab.serve.app import create_app, serve
from seglab.serve.service import ApiError, LoadedModel, Service

__all__ = ["ApiError", "LoadedModel", "Service", "create_app", "serve"]
