"""The operator console: static files (HTML, CSS, ES modules) shipped in the package, served at
/console/ under a strict Content-Security-Policy. The console calls only the public /api/v1 API,
from the browser, with the key the operator signs in with."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
PREFIX = "/console"

# Only the console's own files run (no inline script or style, nothing from another host); photos
# are shown from blob: URLs and the webcam from a media stream.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The webcam is for this page itself; nothing embedded may ask for it.
    "Permissions-Policy": "camera=(self), microphone=()",
}


def install_console(app: FastAPI) -> None:
    """Serve the console at /console/ (and /console, redirected there) with its security headers."""

    @app.get(PREFIX, include_in_schema=False)
    async def console_entry():
        # Relative, so the redirect holds behind a proxy that serves the API under a path prefix.
        return RedirectResponse("console/", status_code=308)

    app.mount(PREFIX, StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
    app.add_middleware(ConsoleHeaders)


class ConsoleHeaders:
    """Adds the security headers to every answer under /console, errors and redirects included;
    plain ASGI, so the API's requests pass straight through."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)
