"""REST routes derived from the operation registry, with typed OpenAPI, and the JSON error handlers.

Each route authorizes before it reads anything: the middleware has authenticated the key (401), the route
checks the operation's role (403), and only then reads the body (at most MAX_BODY_BYTES, 413 beyond) or the
query and hands them to the executor, which validates them. So FastAPI does not parse inputs here; the
OpenAPI description of each route's parameters and body is made from the same input models.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ngm.channels.http_middleware import MAX_BODY_BYTES
from ngm.errors import BodyTooLarge, NgmError, ValidationFailed
from ngm.models.json_rows import JsonText
from ngm.workflows.executor import authorize, field_errors
from ngm.workflows.registry import Operation, Registry
from ngm.workflows.schema import ID_PATTERN, parse_json

log = logging.getLogger("ngm.rest")
ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"description": "for validation errors: [{field, message}]"}}}},
}


class JsonBody(JSONResponse):
    """JSON encoded by orjson: a page of 50 gateways in 0.08 ms where json.dumps took 0.42 ms
    (bench/registry_latency.py). Integer keys become strings, as json.dumps makes them."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_as_is, option=orjson.OPT_NON_STR_KEYS)


def _as_is(value: Any) -> orjson.Fragment:
    """JSON text the database made (JsonText) goes into the body as it is."""
    if isinstance(value, JsonText):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON")


def error_response(description: str) -> dict:
    """An OpenAPI response with the error body."""
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}



def responses(op: Operation) -> dict:
    """Every status the route can answer besides its success, each with the error body."""
    out = {401: error_response("missing or invalid API key"),
           403: error_response(f"needs role {op.role} or stronger"),
           422: error_response("invalid input; details name each field"),
           429: error_response("the key's management API rate limit is reached (Retry-After says when)"),
           503: error_response("the database is unreachable (database_unavailable, with Retry-After), or busy")}
    out[404] = error_response("not found in the caller's organization")
    if op.method in ("POST", "PUT", "DELETE"):
        out[409] = error_response("conflicts with the current state")
    if not op.input_in_query:
        out[413] = error_response(f"the body is larger than {MAX_BODY_BYTES} bytes")
    return out


def _query_params(op: Operation) -> list[dict]:
    if op.input_model is None or not op.input_in_query:
        return []
    schema = op.input_model.model_json_schema(ref_template="#/components/schemas/{model}")
    required = set(schema.get("required", ()))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop,
             **({"description": prop["description"]} if prop.get("description") else {})}
            for name, prop in schema.get("properties", {}).items()]


def openapi_extra(op: Operation) -> dict:
    params = []
    if op.id_param:
        params.append({"name": op.id_param, "in": "path", "required": True,
                       "schema": {"type": "string", "pattern": ID_PATTERN}})
    params += _query_params(op)
    extra: dict[str, Any] = {"parameters": params} if params else {}
    if op.input_model is not None and not op.input_in_query:
        optional = not any(f.is_required() for f in op.input_model.model_fields.values())
        extra["requestBody"] = {"required": not optional, "content": {"application/json": {
                                    "schema": {"$ref": f"#/components/schemas/{op.input_model.__name__}"}}},
                                **({"description": "every field is optional: the body may be left out"}
                                   if optional else {})}
    return extra


async def read_json(request: Request) -> Any:
    """The body as JSON (an empty one as no input), at most MAX_BODY_BYTES: a longer one is refused by its
    declared length before it is read, or while it is read, before it is all in memory."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise BodyTooLarge(MAX_BODY_BYTES)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge(MAX_BODY_BYTES)
    if not body.strip():
        return None
    return parse_json(bytes(body))


def _query(request: Request) -> dict:
    out: dict = {}
    for name, value in request.query_params.multi_items():
        if name in out:
            raise ValidationFailed(f"{name}: must be given once", field=name)
        out[name] = value
    return out


def _endpoint(op: Operation):
    async def endpoint(request: Request):
        principal = request.state.principal
        authorize(op, principal)
        if op.input_in_query:
            params, source = _query(request), "query"
        else:
            params, source = await read_json(request), "json"
        executor = request.app.state.executor
        result = await executor.run(op, principal, params, request.path_params.get(op.id_param or ""), source=source,
                                    json_text=True)
        if op.status_code == 204:
            return Response(status_code=204)
        return JsonBody(result, status_code=op.status_code)

    endpoint.__name__ = op.name
    return endpoint


def _complete_openapi(app: FastAPI, registry: Registry) -> None:
    """The bodies' schemas as components, where the routes' requestBody refers to them; the API key as the
    security scheme of every route (so /docs can send it)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        spec = generate()
        spec.setdefault("components", {})["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer", "description": "the same API key"}}
        spec["security"] = [{"ApiKey": []}, {"Bearer": []}]
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for op in registry:
            if op.input_model is not None and not op.input_in_query:
                schema = op.input_model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[op.input_model.__name__] = schema
        return spec

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def mount_operations(app: FastAPI, registry: Registry) -> None:
    # Fixed paths (e.g. /gateways/resolve) must precede parameterised ones (/gateways/{gateway_id}).
    for op in sorted(registry, key=lambda o: ("{" in o.path, o.path)):
        app.add_api_route(
            op.http_path, _endpoint(op), methods=[op.method], status_code=op.status_code,
            response_model=op.output_model if op.status_code != 204 else None,
            responses=responses(op), summary=op.summary, description=op.description or op.summary,
            tags=[op.resource], operation_id=op.name, name=op.name, openapi_extra=openapi_extra(op),
        )
    _complete_openapi(app, registry)


def _json_error(exc: NgmError, request: Request) -> JsonBody:
    headers = {"Retry-After": str(exc.retry_after)} if getattr(exc, "retry_after", None) else None
    return JsonBody(exc.to_body(), status_code=exc.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NgmError)
    async def _ngm(request: Request, exc: NgmError):
        return _json_error(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _json_error(ValidationFailed.from_fields(field_errors(exc.errors())), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        err = NgmError(str(exc.detail), code=codes.get(exc.status_code, "http_error"))
        err.status = exc.status_code
        return _json_error(err, request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        ref = getattr(request.state, "request_id", "-")
        log.error("unhandled error (request %s)", ref, exc_info=exc)
        return _json_error(NgmError(f"internal error (request {ref})"), request)
