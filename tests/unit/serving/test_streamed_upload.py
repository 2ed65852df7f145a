"""Uploads are bounded while they stream: a body with no Content-Length is refused at the bound."""

from __future__ import annotations

import asyncio
import os
import tempfile

import httpx
from fastapi import FastAPI, Request

from ufme_ray.config import ImageLimits
from ufme_ray.serving.api import schemas
from ufme_ray.serving.api.errors import install_error_handlers
from ufme_ray.serving.api.inputs import read_image_request

LIMITS = ImageLimits(max_bytes=1024 * 1024)
CHUNK = 64 * 1024
TOTAL = 50 * 1024 * 1024
BOUNDARY = "ufmeboundary"


def upload_api(refusals: list | None = None) -> FastAPI:
    app = FastAPI()

    async def note(request: Request, status: int, code: str) -> None:
        (refusals if refusals is not None else []).append((request.url.path, status, code))

    install_error_handlers(app, note)

    @app.post("/upload")
    async def upload(request: Request):
        _, images = await read_image_request(request, schemas.ImageIn, ("image",), LIMITS)
        return {"bytes": len(images["image"])}

    return app


def multipart(image_size: int, sent: list[int]):
    """A multipart body with one `image` file part, streamed in chunks (so sent chunked, no Content-Length)."""

    async def body():
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
        yield (head + "Content-Type: image/jpeg\r\n\r\n").encode()
        for offset in range(0, image_size, CHUNK):
            sent.append(min(CHUNK, image_size - offset))
            yield b"\xff" * sent[-1]
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    return body()


async def post(image_size: int, sent: list[int], refusals: list | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=upload_api(refusals))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(
            "/upload", content=multipart(image_size, sent),
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )


def test_chunked_multipart_over_the_bound_is_refused_while_streaming():
    before = set(os.listdir(tempfile.gettempdir()))
    sent: list[int] = []
    refusals: list = []
    response = asyncio.run(asyncio.wait_for(post(TOTAL, sent, refusals), timeout=30))
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "image_too_large"
    assert refusals == [("/upload", 413, "image_too_large")]  # handed to the audit
    # Stopped within a few chunks of the bound (about 1.4 MB for a 1 MiB image), not at 50 MB.
    assert sum(sent) < 4 * LIMITS.max_bytes, sum(sent)
    assert set(os.listdir(tempfile.gettempdir())) <= before  # nothing spooled to disk and left there


def test_chunked_multipart_within_the_bound_is_read():
    response = asyncio.run(post(LIMITS.max_bytes, []))
    assert response.status_code == 200, response.text
    assert response.json() == {"bytes": LIMITS.max_bytes}
