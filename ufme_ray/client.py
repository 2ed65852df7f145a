"""A small Python client (SDK) for the UFME-Ray REST API.

The API key comes from the `api_key` argument, else `UFME_API_KEY`, else the admin key that
`ufme-ray up` stored in the data folder (`<data_dir>/admin.key`, mode 0600).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from ufme_ray.config import UfmeSettings

ADMIN_KEY_FILE = "admin.key"
KEYS_FILE = "api-keys.json"


class UfmeApiError(RuntimeError):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def find_api_key(settings: UfmeSettings | None = None) -> str | None:
    if os.environ.get("UFME_API_KEY"):
        return os.environ["UFME_API_KEY"]
    settings = settings or UfmeSettings.load()
    path = Path(settings.data_dir) / ADMIN_KEY_FILE
    return path.read_text().strip() if path.exists() else None


class UfmeClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, *, timeout_s: float = 120):
        key = api_key or find_api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "UfmeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _answer(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise UfmeApiError(response.status_code, error["code"], error["message"])
            except (ValueError, KeyError, TypeError):
                raise UfmeApiError(response.status_code, "http_error", response.text[:500]) from None
        return response.json()

    @staticmethod
    def _image(image: bytes | str | Path) -> dict:
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        return {"image": ("image", data)}

    def enrol(self, subject_id: str, image: bytes | str | Path) -> dict:
        return self._answer(self._http.post(f"/api/v1/subjects/{subject_id}/faces", files=self._image(image)))

    def identify(self, image: bytes | str | Path, top_k: int = 5) -> dict:
        return self._answer(self._http.post("/api/v1/identify", files=self._image(image), data={"top_k": str(top_k)}))

    def verify(self, image: bytes | str | Path, subject_id: str) -> dict:
        return self._answer(self._http.post("/api/v1/verify", files=self._image(image), data={"subject_id": subject_id}))

    def subject(self, subject_id: str) -> dict:
        return self._answer(self._http.get(f"/api/v1/subjects/{subject_id}"))

    def erase(self, subject_id: str) -> dict:
        return self._answer(self._http.delete(f"/api/v1/subjects/{subject_id}"))

    def gallery(self) -> dict:
        return self._answer(self._http.get("/api/v1/gallery"))

    def demo_load(self, **body: Any) -> dict:
        return self._answer(self._http.post("/api/v1/demo/load", json=body, timeout=600))

    def audit(self, **filters: Any) -> dict:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._answer(self._http.get("/api/v1/audit", params=params))
