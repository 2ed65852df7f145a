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
    """One service, one API key and (optionally) one gallery: with `gallery`, subject, identify and
    verify calls act in it (/api/v1/galleries/{gallery}/…); without, in `default`."""

    def __init__(
        self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, *, gallery: str | None = None,
        timeout_s: float = 120,
    ):
        key = api_key or find_api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout_s)
        self.gallery_id = gallery
        self._scope = "/api/v1" if gallery is None else f"/api/v1/galleries/{gallery}"

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

    @staticmethod
    def _intake(capture: str | None, quality_filter: str | None) -> dict:
        """How the photo arrived (live / stored) and the quality filter, as form fields."""
        return {k: v for k, v in (("capture", capture), ("quality_filter", quality_filter)) if v is not None}

    def enrol(
        self, subject_id: str, image: bytes | str | Path, *, idempotency_key: str | None = None,
        capture: str | None = None, quality_filter: str | None = None, box: list[float] | None = None,
    ) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        data = self._intake(capture, quality_filter) | ({"box": ",".join(map(str, box))} if box else {})
        return self._answer(self._http.post(
            f"{self._scope}/subjects/{subject_id}/faces", files=self._image(image), data=data, headers=headers
        ))

    def identify(
        self, image: bytes | str | Path, top_k: int = 5, *, galleries: list[str] | None = None,
        capture: str | None = None, quality_filter: str | None = None,
    ) -> dict:
        """In the client's gallery, or in `galleries` at once (each candidate names its gallery)."""
        data = {"top_k": str(top_k), **self._intake(capture, quality_filter)}
        if galleries is not None:
            data["galleries"] = ",".join(galleries)
            return self._answer(self._http.post("/api/v1/identify", files=self._image(image), data=data))
        return self._answer(self._http.post(f"{self._scope}/identify", files=self._image(image), data=data))

    def verify(self, image: bytes | str | Path, subject_id: str) -> dict:
        return self._answer(
            self._http.post(f"{self._scope}/verify", files=self._image(image), data={"subject_id": subject_id})
        )

    def subject(self, subject_id: str) -> dict:
        return self._answer(self._http.get(f"{self._scope}/subjects/{subject_id}"))

    def erase(self, subject_id: str) -> dict:
        return self._answer(self._http.delete(f"{self._scope}/subjects/{subject_id}"))

    def subjects(self, offset: int = 0, limit: int = 100) -> dict:
        """A page of the client's gallery's subject ids."""
        gallery = self.gallery_id or "default"
        return self._answer(self._http.get(f"/api/v1/galleries/{gallery}/subjects", params={"offset": offset, "limit": limit}))

    def create_gallery(self, gallery_id: str, description: str = "", policy: dict | None = None) -> dict:
        body = {"gallery_id": gallery_id, "description": description, "policy": policy or {}}
        return self._answer(self._http.post("/api/v1/galleries", json=body))

    def galleries(self, offset: int = 0, limit: int = 100) -> dict:
        return self._answer(self._http.get("/api/v1/galleries", params={"offset": offset, "limit": limit}))

    def gallery_info(self, gallery_id: str) -> dict:
        return self._answer(self._http.get(f"/api/v1/galleries/{gallery_id}"))

    def update_gallery(self, gallery_id: str, *, description: str | None = None, policy: dict | None = None) -> dict:
        body = {k: v for k, v in (("description", description), ("policy", policy)) if v is not None}
        return self._answer(self._http.patch(f"/api/v1/galleries/{gallery_id}", json=body))

    def delete_gallery(self, gallery_id: str) -> dict:
        return self._answer(self._http.delete(f"/api/v1/galleries/{gallery_id}", timeout=600))

    def import_state(self, import_id: str) -> dict:
        """A bulk import's state, counts and report location."""
        return self._answer(self._http.get(f"/api/v1/imports/{import_id}"))

    def gallery(self) -> dict:
        """The engine's shards (GET /api/v1/gallery)."""
        return self._answer(self._http.get("/api/v1/gallery"))

    def demo_load(self, **body: Any) -> dict:
        if self.gallery_id is not None:
            body.setdefault("gallery_id", self.gallery_id)
        return self._answer(self._http.post("/api/v1/demo/load", json=body, timeout=600))

    def audit(self, **filters: Any) -> dict:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._answer(self._http.get("/api/v1/audit", params=params))
