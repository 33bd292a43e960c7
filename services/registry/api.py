"""The registry's HTTP API: the operations of `aimass models ...` as JSON over HTTP (aiohttp).

Every request needs ``Authorization: Bearer <token>`` (AIMASS_REGISTRY_TOKEN or
AIMASS_REGISTRY_TOKEN_FILE; compared in constant time; never logged or echoed). Without a token
configured the API does not start.

    GET  /v1/models                      every stored version with its status and routes
    GET  /v1/models/{name:version}       one version: record, model.yaml, meta.json, routes
    POST /v1/models                      push: the ONNX file as the raw body (query parameters as in
                                         `aimass models push`: name, version, format, sha256, ...), or
                                         multipart with a ``file`` part, optional ``spec`` (a model.yaml),
                                         ``options`` (a JSON object) and plain fields
    POST /v1/models/{name:version}/retire {"reason": ...}
    GET  /v1/routing                     the routing revision in force (null before the first promote)
    POST /v1/routing/promote             {"model", "group"?, "cameras"?, "reason"?}
    POST /v1/routing/canary              {"model", "percent", "by"?: camera|frame, "group"?}
    POST /v1/routing/shadow              {"model": ref or "off", "group"?}
    POST /v1/routing/rollback            {"group"?}
    GET  /v1/monitoring/compare?window=10m&site=SITE
    GET  /v1/monitoring/drift?window=10m&baseline=1h&threshold=0.5
    GET  /v1/monitoring/events?limit=50&model=REF

Errors are ``{"error": message, "reason": code}`` with 400 (refused input), 401 (token), 404 (no such
version), 409 (the routing or the store does not allow it now), 413 (too large), 503 (Kafka,
ClickHouse or an S3 model store's bucket did not answer or cannot be used).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from aimass import routing as R
from aimass.routing import RoutingError
from aimass.settings import RegistrySettings
from aimass_registry.monitoring import parse_duration
from aimass_registry.service import Registry, Unavailable
from aimass.model_store import StoreError
from aimass_registry.validate import CHUNK, PushOptions, PushRefused, too_large

log = logging.getLogger("aimass.registry.api")
MIN_TOKEN_LEN = 16
MAX_FIELD_BYTES = 1024 * 1024  # a spec or an options part of a multipart push
REGISTRY_KEY = web.AppKey("registry", Registry)


class RegistryConfigError(RuntimeError):
    """The registry cannot start as configured; the message says what to set."""


def resolve_token(settings: RegistrySettings) -> str:
    """The API's bearer token from AIMASS_REGISTRY_TOKEN or AIMASS_REGISTRY_TOKEN_FILE; refuses to go on
    without one (an open model registry lets anyone change what every camera runs)."""
    token = settings.registry_token.get_secret_value().strip()
    path = settings.registry_token_file
    if path is not None:
        if token:
            raise RegistryConfigError("both AIMASS_REGISTRY_TOKEN and AIMASS_REGISTRY_TOKEN_FILE are set; set one")
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryConfigError(f"the registry token file {path} cannot be read "
                                      f"({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    if not token:
        raise RegistryConfigError("the registry's HTTP API needs a bearer token and none is set: set "
                                  "AIMASS_REGISTRY_TOKEN, or AIMASS_REGISTRY_TOKEN_FILE naming a file that holds it "
                                  "(make one with `openssl rand -hex 32`). It does not start without one.")
    if len(token) < MIN_TOKEN_LEN:
        raise RegistryConfigError(f"the registry token is shorter than {MIN_TOKEN_LEN} characters; use a long random "
                                  "one (`openssl rand -hex 32`)")
    return token


def _error(status: int, reason: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message, "reason": reason}, status=status, headers=headers or None)


def _status_of(exc: Exception) -> int:
    if isinstance(exc, PushRefused):
        return {"too_large": 413, "exists": 409, "unavailable": 503}.get(exc.reason, 400)
    if isinstance(exc, StoreError):
        return {"unknown": 404, "exists": 409, "corrupt": 500, "unavailable": 503}.get(exc.reason, 400)
    if isinstance(exc, RoutingError):
        return 409
    if isinstance(exc, Unavailable):
        return 503
    return 400


def _auth_middleware(token: str):
    expected = token.encode()

    @web.middleware
    async def auth(request: web.Request, handler):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return _error(401, "unauthorized", "a valid bearer token is required: send 'Authorization: Bearer "
                          "<token>' (the registry's AIMASS_REGISTRY_TOKEN)",
                          **{"WWW-Authenticate": 'Bearer realm="aimass-registry"'})
        return await handler(request)
    return auth


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
    except (PushRefused, StoreError, RoutingError, Unavailable) as exc:
        reason = getattr(exc, "reason", None) or {RoutingError: "routing", Unavailable: "unavailable"}.get(type(exc), "refused")
        return _error(_status_of(exc), reason, str(exc))
    except (ValueError, TypeError, KeyError) as exc:
        return _error(400, "bad_request", str(exc))
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal", "internal error; the registry's log has the details")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


def _routing_json(routing) -> Any:
    return None if routing is None else msgspec.to_builtins(routing)


def _cameras(value) -> list[str] | None:
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    if isinstance(value, list) and all(isinstance(c, str) for c in value):
        return value
    raise ValueError("cameras must be a list of camera ids or a comma-separated string")


def build_api(registry: Registry, token: str) -> web.Application:
    """The aiohttp application (auth first, then errors as JSON)."""
    app = web.Application(middlewares=[_auth_middleware(token), _errors], client_max_size=MAX_FIELD_BYTES)
    app[REGISTRY_KEY] = registry
    pushing = asyncio.Semaphore(1)  # one probe at a time: it takes the CPU the detectors need
    routes = web.RouteTableDef()
    max_bytes = registry.max_bytes

    async def save(read_chunk, dest: Path, display: str) -> None:
        size = 0
        with open(dest, "wb") as f:
            while chunk := await read_chunk():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large(display, size, max_bytes, at_least=True)
                f.write(chunk)

    async def text_part(part, what: str) -> str:
        data = bytearray()
        while chunk := await part.read_chunk():
            data += chunk
            if len(data) > MAX_FIELD_BYTES:
                raise PushRefused("bad_spec", f"the multipart field {what!r} is larger than {MAX_FIELD_BYTES} bytes")
        return data.decode("utf-8", "replace")

    @routes.get("/v1/models")
    async def list_models(request):
        return web.json_response({"models": await registry.list()})

    @routes.get("/v1/models/{ref}")
    async def show(request):
        return web.json_response(await registry.show(request.match_info["ref"]))

    @routes.post("/v1/models")
    async def push(request: web.Request):
        if request.content_length is not None and request.content_length > max_bytes + MAX_FIELD_BYTES:
            raise too_large("the upload", request.content_length, max_bytes)
        params: dict[str, Any] = dict(request.query)
        spec_text = None
        staging = registry.store.staging()
        upload = staging / "upload.onnx"
        try:
            filename = params.pop("filename", "")
            if request.content_type.startswith("multipart/"):
                reader = await request.multipart()
                got_file = False
                while (part := await reader.next()) is not None:
                    if part.name == "file":
                        filename = part.filename or filename
                        await save(part.read_chunk, upload, f"the upload {filename or ''}".strip())
                        got_file = True
                    elif part.name == "spec":
                        spec_text = await text_part(part, "spec")
                    elif part.name == "options":
                        try:
                            options = json.loads(await text_part(part, "options"))
                        except json.JSONDecodeError:
                            raise PushRefused("bad_spec", "the multipart field 'options' is not JSON") from None
                        if not isinstance(options, dict):
                            raise PushRefused("bad_spec", "the multipart field 'options' must be a JSON object")
                        params.update(options)
                    elif part.name:
                        params[part.name] = await text_part(part, part.name)
                if not got_file:
                    raise PushRefused("bad_request", "a multipart push needs a 'file' part holding the ONNX file")
            else:
                if not request.can_read_body:
                    raise PushRefused("bad_request", "no model in the request: send the ONNX file as the body "
                                      "(Content-Type: application/octet-stream) or as the multipart part 'file'")
                await save(lambda: request.content.read(CHUNK), upload, f"the upload {filename}".strip())
            opts = PushOptions.from_mapping(params, spec_text)
            display = f"upload {Path(filename).name}" if filename else "the upload"
            async with pushing:
                record = await asyncio.get_running_loop().run_in_executor(
                    None, functools.partial(registry.push, upload, opts, display=display, source_name=Path(filename).name,
                                            pushed_by=f"api:{request.remote or '?'}"))
        finally:
            registry.store.discard(staging)
        return web.json_response(record.as_dict(), status=201)

    @routes.post("/v1/models/{ref}/retire")
    async def retire(request):
        body = await _json_body(request)
        rec = await registry.retire(request.match_info["ref"], str(body.get("reason") or ""))
        return web.json_response(rec.as_dict())

    @routes.get("/v1/routing")
    async def routing(request):
        return web.json_response({"routing": _routing_json(await registry.routing())})

    def changed(new) -> web.Response:
        return web.json_response({"revision": new.revision, "reason": new.reason, "routing": _routing_json(new)})

    def need_model(body: dict) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ValueError("the body needs \"model\": \"NAME:VERSION\"")
        return model

    @routes.post("/v1/routing/promote")
    async def promote(request):
        body = await _json_body(request)
        return changed(await registry.promote(need_model(body), str(body.get("group") or R.DEFAULT_GROUP),
                                              _cameras(body.get("cameras")), by="api", reason=str(body.get("reason") or "")))

    @routes.post("/v1/routing/canary")
    async def canary(request):
        body = await _json_body(request)
        try:
            percent = float(body["percent"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("the body needs \"percent\": a number in 0..100") from None
        by_key = str(body.get("by") or "camera")
        if by_key not in ("camera", "frame") or not 0 <= percent <= 100:
            raise ValueError("percent must be in 0..100 and by 'camera' or 'frame'")
        return changed(await registry.canary(need_model(body), percent, by_key, str(body.get("group") or R.DEFAULT_GROUP),
                                             by="api", reason=str(body.get("reason") or "")))

    @routes.post("/v1/routing/shadow")
    async def shadow(request):
        body = await _json_body(request)
        return changed(await registry.shadow(need_model(body), str(body.get("group") or R.DEFAULT_GROUP), by="api",
                                             reason=str(body.get("reason") or "")))

    @routes.post("/v1/routing/rollback")
    async def rollback(request):
        body = await _json_body(request)
        return changed(await registry.rollback(str(body.get("group") or R.DEFAULT_GROUP), by="api",
                                               reason=str(body.get("reason") or "")))

    def table(columns, rows) -> web.Response:
        return web.json_response({"columns": columns, "rows": [dict(zip(columns, r)) for r in rows]})

    @routes.get("/v1/monitoring/compare")
    async def compare(request):
        q = request.query
        return table(*await registry.compare(parse_duration(q.get("window", "10m")), q.get("site") or None))

    @routes.get("/v1/monitoring/drift")
    async def drift(request):
        q = request.query
        return table(*await registry.drift(parse_duration(q["window"]) if "window" in q else None,
                                           parse_duration(q["baseline"]) if "baseline" in q else None,
                                           float(q["threshold"]) if "threshold" in q else None))

    @routes.get("/v1/monitoring/events")
    async def events(request):
        q = request.query
        limit = q.get("limit", "50")
        if not limit.isdigit() or int(limit) < 1:
            raise ValueError(f"limit {limit!r} is not a positive whole number")
        return table(*await registry.events(int(limit), q.get("model") or None))

    app.add_routes(routes)
    return app


async def serve(registry: Registry, token: str, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start the API on host:port (0: a free port). Returns the runner (``await runner.cleanup()``
    stops it) and the URL it listens on."""
    runner = web.AppRunner(build_api(registry, token), access_log=logging.getLogger("aimass.registry.access"))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    h, p = bound[0], bound[1]
    return runner, f"http://{'[' + h + ']' if ':' in h else h}:{p}"
