"""The application's shared objects, by key: settings, the job queue, the token, the request rules, open streams."""

from __future__ import annotations

from aiohttp import web

from ..core.settings import Settings
from .auth import RequestRules
from .connections import ConnectionGuard
from .upload import UploadBudget
from .worker import Worker

SETTINGS = web.AppKey("settings", Settings)
WORKER = web.AppKey("worker", Worker)
TOKEN = web.AppKey("token", str)
RULES = web.AppKey("rules", RequestRules)
SOCKETS = web.AppKey("websockets", set)
EVENT_STREAMS = web.AppKey("event_streams", set)  # the queues of open /events streams
CONNECTIONS = web.AppKey("connections", ConnectionGuard)
UPLOADS = web.AppKey("uploads", UploadBudget)  # the bytes WebSocket uploads hold over all connections
