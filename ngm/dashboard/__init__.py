"""The operator dashboard at `/`: a single-page app of plain ES modules, served from ngm/dashboard/static.

No build step and no CDN: every asset ships in the package, so the dashboard works offline and its
set-up is the project's own. The page holds no data of its own; it calls the REST API with the key the
operator signs in with (kept in sessionStorage, sent as X-API-Key, never in a URL), so the server's
role checks apply to it as to every other caller.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"
# Scripts, styles and connections from this origin only: a stored gateway name can never run as code.
_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),  # revalidate (ETag): an upgraded server serves its own page at once
]


class _WithHeaders:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {name for name, _ in _HEADERS}
                message["headers"] = [h for h in message.get("headers", []) if h[0].lower() not in names] + _HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_dashboard(fa) -> None:
    from starlette.responses import FileResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def index(request):
        return FileResponse(STATIC / "index.html")

    fa.router.routes.append(Route("/", endpoint=_WithHeaders(_asgi(index)), methods=["GET", "HEAD"]))
    fa.router.routes.append(Mount("/static", app=_WithHeaders(StaticFiles(directory=STATIC)), name="static"))


def _asgi(endpoint):
    from starlette.requests import Request

    async def app(scope, receive, send):
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)

    return app
