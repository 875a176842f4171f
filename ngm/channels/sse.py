"""GET /api/v1/events: Server-Sent Events of the caller's organization (health transitions and probe
results), from any instance (the bus spans instances through Redis)."""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import FastAPI, Query, Request
from fastapi.responses import StreamingResponse

from ngm.channels.rest import error_response
from ngm.errors import ValidationFailed
from ngm.nodes.events.bus import CIRCUIT_OPEN, HEALTH_PROBE, HEALTH_TRANSITION

EVENT_TYPES = (HEALTH_TRANSITION, HEALTH_PROBE, CIRCUIT_OPEN)
HEARTBEAT_SECONDS = 15.0


def format_event(event: dict) -> str:
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


def mount_event_stream(app: FastAPI, bus, stopping: asyncio.Event) -> None:
    @app.get("/api/v1/events", tags=["events"], summary="Live event stream (Server-Sent Events)",
             description="`text/event-stream` of the caller's organization: `health.transition` and "
                         "`health.probe` events, each with id, type, occurred_at and data. A comment line "
                         "is sent every 15 s to keep the connection open.",
             response_class=StreamingResponse, responses={
                 200: {"content": {"text/event-stream": {}}},
                 401: error_response("missing or invalid API key"),
                 422: error_response("unknown event type; details name it"),
                 429: error_response("the key's management API rate limit is reached"),
                 503: error_response("the database is unreachable (database_unavailable)")})
    async def events(request: Request, types: str | None = Query(None, description="comma-separated types"),
                     gateway_id: str | None = Query(None, max_length=128)):
        wanted = set(EVENT_TYPES)
        if types:
            wanted = {t.strip() for t in types.split(",") if t.strip()}
            unknown = wanted - set(EVENT_TYPES)
            if unknown:
                raise ValidationFailed(f"unknown event type {sorted(unknown)[0]}; one of {', '.join(EVENT_TYPES)}",
                                       field="types")
        subscription = bus.subscribe(request.state.principal.organization_id)

        async def stream():
            try:
                yield "retry: 3000\n: connected\n\n"
                quiet_since = time.monotonic()
                while not stopping.is_set() and not await request.is_disconnected():
                    event = await subscription.get(timeout=1.0)
                    if event is None:
                        if time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                            quiet_since = time.monotonic()
                            yield ": keep-alive\n\n"
                        continue
                    if event["type"] not in wanted:
                        continue
                    if gateway_id and event.get("data", {}).get("gateway_id") != gateway_id:
                        continue
                    quiet_since = time.monotonic()
                    yield format_event(event)
            finally:
                subscription.close()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
