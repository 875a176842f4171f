"""REST routes derived from the operation registry, with typed OpenAPI, and the JSON error handlers."""

from __future__ import annotations

import inspect
import logging
from typing import Annotated

from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ngm.errors import NgmError, ValidationFailed
from ngm.workflows.executor import field_errors
from ngm.workflows.registry import Operation, Registry

log = logging.getLogger("ngm.rest")


def _error_schema() -> dict:
    return {"content": {"application/json": {"schema": {
        "type": "object",
        "properties": {"error": {"type": "object", "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "details": {"description": "for validation errors: [{field, message}]"}}}},
    }}}}


def _responses(op: Operation) -> dict:
    out = {401: {"description": "missing or invalid API key", **_error_schema()},
           403: {"description": f"needs role {op.role} or stronger", **_error_schema()},
           422: {"description": "invalid input; details name each field", **_error_schema()}}
    if op.id_param:
        out[404] = {"description": "not found in the caller's organization", **_error_schema()}
    if op.method in ("POST", "PUT", "DELETE"):
        out[409] = {"description": "conflicts with the current state", **_error_schema()}
    return out


def _endpoint(op: Operation):
    params = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
    if op.id_param:
        params.append(inspect.Parameter(op.id_param, inspect.Parameter.KEYWORD_ONLY,
                                        annotation=Annotated[str, Path(max_length=128)]))
    if op.input_model is not None:
        where = Query() if op.input_in_query else Body()
        params.append(inspect.Parameter("payload", inspect.Parameter.KEYWORD_ONLY,
                                        annotation=Annotated[op.input_model, where]))

    async def endpoint(request: Request, **kwargs):
        executor = request.app.state.executor
        result = await executor.run(op, request.state.principal, kwargs.get("payload"),
                                    kwargs.get(op.id_param) if op.id_param else None)
        if op.status_code == 204:
            return Response(status_code=204)
        return JSONResponse(result, status_code=op.status_code)

    endpoint.__signature__ = inspect.Signature(params)
    endpoint.__name__ = op.name
    return endpoint


def mount_operations(app: FastAPI, registry: Registry) -> None:
    # Fixed paths (e.g. /gateways/resolve) must precede parameterised ones (/gateways/{gateway_id}).
    for op in sorted(registry, key=lambda o: ("{" in o.path, o.path)):
        app.add_api_route(
            op.http_path, _endpoint(op), methods=[op.method], status_code=op.status_code,
            response_model=op.output_model if op.status_code != 204 else None,
            responses=_responses(op), summary=op.summary, description=op.description or op.summary,
            tags=[op.resource], operation_id=op.name, name=op.name,
        )


def _json_error(exc: NgmError, request: Request) -> JSONResponse:
    return JSONResponse(exc.to_body(), status_code=exc.status)


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
