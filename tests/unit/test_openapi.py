"""The OpenAPI document is complete: every reference resolves, every image route documents its fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ufme_ray.serving.api.app import create_api


@pytest.fixture(scope="module")
def document() -> dict:
    return create_api().openapi()


def references(node) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [ref for value in node.values() for ref in references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in references(value)]
    return []


def test_every_reference_resolves(document):
    # Regression: image routes referred to #/components/schemas/ImageIn, which was never defined,
    # so clients and Schemathesis could not see (or fuzz) the JSON bodies.
    names = set(document["components"]["schemas"])
    assert [ref for ref in references(document) if ref.removeprefix("#/components/schemas/") not in names] == []


@pytest.mark.parametrize(
    "path, fields",
    [
        ("/api/v1/subjects/{subject_id}/faces", {"image", "capture", "quality_filter", "box"}),
        ("/api/v1/identify", {"image", "capture", "quality_filter", "top_k", "galleries"}),
        ("/api/v1/verify", {"image", "capture", "quality_filter", "subject_id", "image2"}),
        ("/api/v1/analyze", {"image", "capture", "quality_filter"}),
    ],
)
def test_image_routes_document_both_encodings_and_every_field(document, path, fields):
    content = document["paths"][path]["post"]["requestBody"]["content"]
    as_json, as_form = content["application/json"]["schema"], content["multipart/form-data"]["schema"]
    assert set(as_json["properties"]) == set(as_form["properties"]) == fields
    assert as_json["properties"]["image"]["format"] == "byte" and as_form["properties"]["image"]["format"] == "binary"
    assert as_json["required"] == ["image"] and as_json["additionalProperties"] is False


def test_document_matches_the_snapshot(document):
    """The published API changes only on purpose: refresh the snapshot with
    `python -c 'import json; from ufme_ray.serving.api.app import create_api; print(json.dumps(create_api().openapi(), indent=1, sort_keys=True))' > tests/unit/snapshots/openapi.json`
    and say why in the commit."""
    snapshot = json.loads((Path(__file__).parent / "snapshots" / "openapi.json").read_text())
    assert json.loads(json.dumps(document)) == snapshot
