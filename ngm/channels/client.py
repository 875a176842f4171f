"""Run an operation against a running server over REST (the CLI's --url mode and `ngm mcp --url`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from ngm.errors import (
    Conflict,
    Forbidden,
    NgmError,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from ngm.workflows.registry import Operation

_BY_STATUS = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 422: ValidationFailed,
              429: RateLimited, 503: Unavailable}


def error_from_response(resp: httpx.Response) -> NgmError:
    try:
        body = resp.json().get("error") or {}
    except ValueError:
        body = {}
    cls = _BY_STATUS.get(resp.status_code, NgmError)
    err = cls(body.get("message") or f"HTTP {resp.status_code}", details=body.get("details"),
              code=body.get("code"))
    err.status = resp.status_code
    return err


def _query(params: dict) -> list[tuple[str, str]]:
    out = []
    for key, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                out.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
    return out


class RemoteClient:
    def __init__(self, url: str, api_key: str | None, timeout: float = 30.0):
        headers = {"X-API-Key": api_key} if api_key else {}
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout,
                                         trust_env=False)

    async def run(self, op: Operation, params: dict | None, resource_id: str | None = None) -> Any:
        path = op.http_path
        if op.id_param:
            path = path.replace("{" + op.id_param + "}", quote(resource_id or "", safe=""))
        kwargs: dict = {}
        if params:
            if op.input_in_query:
                kwargs["params"] = _query(params)
            else:
                kwargs["json"] = params
        elif not op.input_in_query and op.input_model is not None:
            kwargs["json"] = {}
        try:
            resp = await self._client.request(op.method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self._client.base_url}: {type(exc).__name__}",
                              code="unreachable") from None
        if resp.status_code >= 400:
            raise error_from_response(resp)
        return resp.json() if resp.status_code != 204 and resp.content else None

    async def aclose(self) -> None:
        await self._client.aclose()
