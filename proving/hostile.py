"""The hostile request corpus of the bad-input proof: deterministic, seeded, built from real photos.

Case i of seed s is a pure function of (s, i): `HostileCorpus(...).cases(n)` yields the same n
requests on every run. Kinds cycle in a fixed shuffled schedule (heavier kinds appear less often),
so 500 cases already hold every kind; more cases add variants (other photos, cut points, bit
positions, ids, routes, encodings).

A case whose input is odd but valid (a CMYK JPEG of a face) may legitimately be answered 2xx;
such inputs only go to routes that cannot change the gallery. Nothing in the corpus may change it.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote

from PIL import Image

from proving import hostile_images as hi
from ufme_ray.config import ImageLimits

ENROL, GET_SUBJECT, DELETE_SUBJECT = "POST /api/v1/subjects/{id}/faces", "GET /api/v1/subjects/{id}", "DELETE /api/v1/subjects/{id}"
IDENTIFY, VERIFY, ANALYZE = "POST /api/v1/identify", "POST /api/v1/verify", "POST /api/v1/analyze"
GALLERY, AUDIT, DEMO_LOAD = "GET /api/v1/gallery", "GET /api/v1/audit", "POST /api/v1/demo/load"
IMAGE_ROUTES = (ENROL, IDENTIFY, VERIFY, ANALYZE)
READ_ONLY_IMAGE_ROUTES = (IDENTIFY, VERIFY, ANALYZE)
ROUTE_ROLE = {ENROL: "enrol", GET_SUBJECT: "enrol", DELETE_SUBJECT: "enrol", IDENTIFY: "search", VERIFY: "search",
              ANALYZE: "search", GALLERY: "admin", AUDIT: "admin", DEMO_LOAD: "admin"}

# Subject ids the API must refuse (none of them, once URL-decoded, matches SUBJECT_ID_PATTERN).
HOSTILE_SUBJECT_IDS = (
    "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "a/b", "/", "..", ".", ".hidden",
    "\x00", "a\x00b", "\x01\x1f\x7f", "line\nbreak", "tab\there", "\u202eevil.exe", "\u200b", "zero\u200bwidth",
    "😀", "名前", "ｆｕｌｌｗｉｄｔｈ", "é", "x" * 129, "y" * 10_000, " ", "  lead", "trail ", "\t", "-dash", "_under",
    "a b", "a;b", "a?b=c", "a#b", "a%b", "a\\b", "C:\\Windows", "$(reboot)", "'; DROP TABLE subjects;--", "<script>",
    "\ud800", "",
)
INVALID_BASE64 = (
    "!!!not base64!!!", "aGVsbG8", "aGVsbG8=\n", "aGV sbG8=", "-_-_", "data:image/jpeg;base64,/9j/4AAQ", "é" * 16,
    "====", "a", "\ud800\udc00", "aGVsbG8=" * 3 + "!",
)


@dataclass(frozen=True)
class HostileCase:
    kind: str
    name: str
    method: str
    path: str  # as sent: percent-encoded, never normalised
    route: str  # the route it aims at, for the tables
    request: dict = field(default_factory=dict)  # httpx request keywords: content, files, data, headers, params
    role: str | None = "admin"  # whose key is sent; None: no key (the case's own headers, if any, apply)
    may_succeed: bool = False  # a 2xx answer is correct (odd but valid input on a read-only route)


@dataclass(frozen=True)
class Payload:
    data: bytes
    filename: str
    content_type: str
    decodable: bool = False  # a valid image the service may decode
    has_face: bool = False


def json_request(body) -> dict:
    """A JSON body serialised here (ASCII escapes), so that lone surrogates can be sent too."""
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


def subject_path(subject_id: str, suffix: str = "") -> str:
    # Already-percent-encoded ids go out as they are (that is their point); others are encoded whole.
    if "%" in subject_id and subject_id.isascii():
        encoded = subject_id
    else:
        encoded = quote(subject_id, safe="", errors="surrogatepass")
    return f"/api/v1/subjects/{encoded}{suffix}"


class HostileCorpus:
    """Hostile requests built from the photos under `faces_dir` (the repository's ../shared/faces)."""

    def __init__(self, faces_dir: Path, *, seed: int, known_subjects: list[str], limits: ImageLimits | None = None):
        self.seed = seed
        self.limits = limits or ImageLimits()
        self.known_subjects = list(known_subjects) or ["bi-known-none"]
        self.photos = sorted((faces_dir / "lfw").glob("*/*.jpg"))
        # Live captures that pass every enrolment gate, of people never enrolled by the proof: if an id
        # check let a request through, this face would be enrolled and the gallery check would see it.
        self.live_faces = [faces_dir / "deepface/id13/img38.jpg", faces_dir / "deepface/id13/img39.jpg"]
        self.probe_face = faces_dir / "pad/live/silentface_image_T1.jpg"
        if not self.photos or not self.probe_face.exists():
            raise FileNotFoundError(f"the face photos are needed under {faces_dir}")
        builders: dict[str, tuple[int, Callable[[random.Random], HostileCase]]] = {
            "truncated_jpeg": (6, self._truncated_jpeg),
            "truncated_png": (4, self._truncated_png),
            "corrupt_jpeg": (5, self._corrupt_jpeg),
            "corrupt_png": (3, self._corrupt_png),
            "corrupt_header": (2, self._corrupt_header),
            "wrong_magic": (3, self._wrong_magic),
            "bomb_header": (4, self._bomb_header),
            "bomb_real": (1, self._bomb_real),
            "limit_edge": (1, self._limit_edge),
            "tiny": (3, self._tiny),
            "huge_20000": (1, self._huge_20000),
            "odd_encoding": (6, self._odd_encoding),
            "exif_orientation": (2, self._exif_orientation),
            "animated_gif": (2, self._animated_gif),
            "non_image": (5, self._non_image),
            "oversized": (1, self._oversized),
            "invalid_base64": (3, self._invalid_base64),
            "wrong_json": (6, self._wrong_json),
            "wrong_content_type": (3, self._wrong_content_type),
            "multipart_shape": (4, self._multipart_shape),
            "hostile_subject_id": (8, self._hostile_subject_id),
            "unknown_subject": (3, self._unknown_subject),
            "auth": (4, self._auth),
            "admin_params": (3, self._admin_params),
            "method_route": (2, self._method_route),
        }
        self.kinds = sorted(builders)
        schedule = [kind for kind in self.kinds for _ in range(builders[kind][0])]
        random.Random(seed).shuffle(schedule)
        self._schedule = schedule
        self._builders = {kind: build for kind, (_, build) in builders.items()}

    def cases(self, count: int) -> Iterator[HostileCase]:
        for index in range(count):
            kind = self._schedule[index % len(self._schedule)]
            rng = random.Random(f"{self.seed}:{index}")
            case = self._builders[kind](rng)
            yield dataclasses.replace(case, name=f"{index:05d} {case.name}")

    # --- photos ---------------------------------------------------------------------------------

    def _photo(self, rng: random.Random) -> tuple[str, bytes]:
        path = rng.choice(self.photos)
        return path.stem, _read(path)

    def _png_photo(self, rng: random.Random) -> tuple[str, bytes]:
        path = rng.choice(self.photos)
        return path.stem, _png_of(path)

    # --- sending an image payload somewhere ---------------------------------------------------------

    def _image_case(self, rng: random.Random, kind: str, detail: str, payload: Payload) -> HostileCase:
        # A decodable face could be enrolled: it only goes where the gallery cannot change.
        routes = READ_ONLY_IMAGE_ROUTES if payload.decodable and payload.has_face else IMAGE_ROUTES
        route = rng.choice(routes)
        as_json = rng.random() < 0.4
        fields: dict = {}
        images = {"image": payload}
        path = route.split(" ", 1)[1]
        if route == ENROL:
            path = subject_path(f"bi-hostile-{rng.randrange(1 << 32):08x}", "/faces")
        elif route == IDENTIFY and rng.random() < 0.5:
            fields["top_k"] = rng.randint(1, 100)
        elif route == VERIFY:
            if rng.random() < 0.5:
                fields["subject_id"] = rng.choice(self.known_subjects)
            else:
                probe = Payload(_read(self.probe_face), "probe.jpg", "image/jpeg", True, True)
                images = {"image": payload, "image2": probe} if rng.random() < 0.5 else {"image": probe, "image2": payload}
        if as_json:
            body = {name: base64.b64encode(p.data).decode() for name, p in images.items()} | fields
            request = json_request(body)
        else:
            request = {"files": {name: (p.filename, p.data, p.content_type) for name, p in images.items()},
                       "data": {k: str(v) for k, v in fields.items()}}
        may_succeed = payload.decodable and route != ENROL
        return HostileCase(kind, f"{detail} -> {route} ({'json' if as_json else 'multipart'})", "POST", path, route,
                           request, ROUTE_ROLE[route], may_succeed)

    # --- image kinds ----------------------------------------------------------------------------

    def _truncated_jpeg(self, rng):
        stem, data = self._photo(rng)
        cut = hi.truncated(data, rng)
        return self._image_case(rng, "truncated_jpeg", f"{stem}.jpg[:{len(cut)}/{len(data)}]",
                                Payload(cut, f"{stem}.jpg", "image/jpeg"))

    def _truncated_png(self, rng):
        stem, data = self._png_photo(rng)
        # Past the end of the pixel data only the zlib checksum and IEND are missing, which decoders accept.
        cut = hi.truncated(data, rng, end=hi.png_pixel_data_end(data) - 8)
        return self._image_case(rng, "truncated_png", f"{stem}.png[:{len(cut)}/{len(data)}]",
                                Payload(cut, f"{stem}.png", "image/png"))

    def _corrupt_jpeg(self, rng):
        stem, data = self._photo(rng)
        if rng.random() < 0.5:
            count = rng.choice((1, 2, 8, 64, 512))
            damaged, detail = hi.flip_bits(data, rng, count, start=2), f"{count} bit flips"
        else:
            damaged, detail = hi.overwrite_run(data, rng, start=2), "random run"
        # Damaged entropy data often still decodes (to a smeared face): a correct answer may be 2xx.
        return self._image_case(rng, "corrupt_jpeg", f"{stem}.jpg {detail}",
                                Payload(damaged, f"{stem}.jpg", "image/jpeg", decodable=True, has_face=True))

    def _corrupt_png(self, rng):
        stem, data = self._png_photo(rng)
        count = rng.choice((1, 4, 32, 256))
        damaged = hi.flip_bits(data, rng, count, start=len(hi.PNG_MAGIC))
        return self._image_case(rng, "corrupt_png", f"{stem}.png {count} bit flips",
                                Payload(damaged, f"{stem}.png", "image/png", decodable=True, has_face=True))

    def _corrupt_header(self, rng):
        stem, png = self._png_photo(rng)
        _, jpeg = self._photo(rng)
        variants = {
            "png_bad_ihdr_crc": (hi.png_bad_ihdr_crc(png), "image/png"),
            "png_bad_bit_depth": (hi.png_bad_bit_depth(png), "image/png"),
            "jpeg_zero_size": (hi.jpeg_header_bomb(jpeg, 0, 0), "image/jpeg"),
            "png_zero_size": (hi.png_header_bomb(0, 0), "image/png"),
            "jpeg_no_frame": (jpeg[:2] + jpeg[-2:], "image/jpeg"),
        }
        name = rng.choice(sorted(variants))
        data, content_type = variants[name]
        return self._image_case(rng, "corrupt_header", f"{stem} {name}", Payload(data, f"{stem}.img", content_type))

    def _wrong_magic(self, rng):
        stem, data = (self._photo if rng.random() < 0.5 else self._png_photo)(rng)
        return self._image_case(rng, "wrong_magic", stem, Payload(hi.wrong_magic(data, rng), f"{stem}.jpg", "image/jpeg"))

    def _bomb_header(self, rng):
        _, jpeg = self._photo(rng)
        side = rng.choice((20_000, 60_000, 65_500))
        variants = {
            "png": (lambda: hi.png_header_bomb(side, side), "image/png"),
            "png_2^31": (lambda: hi.png_header_bomb(2**31 - 1, 2**31 - 1), "image/png"),
            "png_wide": (lambda: hi.png_header_bomb(2**31 - 1, 1), "image/png"),
            "jpeg": (lambda: hi.jpeg_header_bomb(jpeg, side, side), "image/jpeg"),
            "gif": (lambda: hi.gif_header_bomb(min(side, 65_535), min(side, 65_535)), "image/gif"),
            "webp": (lambda: hi.webp_header_bomb(16_384, 16_384), "image/webp"),
            "bmp": (lambda: hi.bmp_header_bomb(side, side), "image/bmp"),
            "bmp_top_down": (lambda: hi.bmp_header_bomb(side, -side), "image/bmp"),
        }
        name = rng.choice(sorted(variants))
        build, content_type = variants[name]
        return self._image_case(rng, "bomb_header", f"{name} {side}", Payload(build(), f"bomb.{name[:4]}", content_type))

    def _bomb_real(self, rng):
        name = rng.choice(("zlib_10000x10000", "ztxt_64MiB"))
        data = _zlib_bomb() if name.startswith("zlib") else _text_bomb()
        return self._image_case(rng, "bomb_real", name, Payload(data, "bomb.png", "image/png"))

    def _limit_edge(self, rng):
        # Just under the pixel limit (a valid, blank image the service must decode) or just over it.
        side = int(self.limits.max_pixels**0.5)
        under = rng.random() < 0.5
        width, height = (side - 1, side - 1) if under else (side + 1, side + 1)
        if rng.random() < 0.5:  # extreme aspect ratio, same pixel budget
            width, height = (self.limits.min_side_px, (width * height) // self.limits.min_side_px)
            width, height = (width, height) if rng.random() < 0.5 else (height, width)
        data = _blank_png(width, height)
        return self._image_case(rng, "limit_edge", f"{width}x{height} ({'under' if under else 'over'} the limit)",
                                Payload(data, "edge.png", "image/png", decodable=under))

    def _tiny(self, rng):
        fmt = rng.choice(("PNG", "JPEG", "WEBP", "BMP", "GIF"))
        side = rng.choice((1, 1, 2, self.limits.min_side_px - 1))
        data = hi.encode(Image.new("RGB", (side, side), (200, 150, 120)), fmt)
        return self._image_case(rng, "tiny", f"{side}x{side} {fmt}", Payload(data, f"tiny.{fmt.lower()}", f"image/{fmt.lower()}"))

    def _huge_20000(self, rng):
        return self._image_case(rng, "huge_20000", "20000x20000 1-bit PNG", Payload(_png_20000(), "huge.png", "image/png"))

    def _odd_encoding(self, rng):
        path = rng.choice(self.photos)
        blank = rng.random() < 0.25  # the same encodings without a face may go to enrolment (no_face)
        name = rng.choice(sorted(hi.ODD_ENCODINGS))
        data = _odd_encoding_of(None if blank else path, name)
        return self._image_case(rng, "odd_encoding", f"{'blank' if blank else path.stem} {name}",
                                Payload(data, f"x.{name.rsplit('_', 1)[-1]}", "image/*", decodable=True, has_face=not blank))

    def _exif_orientation(self, rng):
        path = rng.choice(self.photos)
        orientation = rng.choice((1, 3, 6, 8, 0, 9, 255, 65_535))
        # An orientation outside 0-8 cannot say which way up the face is: refused (bad_exif), never served sideways.
        return self._image_case(rng, "exif_orientation", f"{path.stem} orientation={orientation}",
                                Payload(_exif_jpeg(path, orientation), "exif.jpg", "image/jpeg", decodable=orientation <= 8, has_face=True))

    def _animated_gif(self, rng):
        path = rng.choice(self.photos)
        return self._image_case(rng, "animated_gif", path.stem, Payload(_animated_gif_of(path), f"{path.stem}.gif", "image/gif"))

    def _non_image(self, rng):
        files = hi.non_images(rng)
        name = rng.choice(sorted(files))
        ext, content_type = rng.choice((("jpg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp"),
                                        ("jpg", "application/octet-stream"), ("", "")))
        filename = f"{name}.{ext}" if ext else rng.choice(("noext", "../../etc/passwd", "名前.jpg", "a\0b.jpg"))
        return self._image_case(rng, "non_image", f"{name} as {filename!r}", Payload(files[name], filename, content_type))

    def _oversized(self, rng):
        # More bytes than the limit, as a JSON string (413 from Content-Length) or as a multipart file.
        size = self.limits.max_bytes + rng.randint(1, 2_000_000)
        route = rng.choice(IMAGE_ROUTES)
        path = subject_path("bi-oversized", "/faces") if route == ENROL else route.split(" ", 1)[1]
        blob = b"\xff\xd8\xff\xe0" + bytes(size - 4)
        if rng.random() < 0.5:
            request, detail = json_request({"image": base64.b64encode(blob).decode()}), f"{size} bytes as base64"
        else:
            request, detail = {"files": {"image": ("big.jpg", blob, "image/jpeg")}}, f"{size} bytes multipart"
        return HostileCase("oversized", f"{detail} -> {route}", "POST", path, route, request, ROUTE_ROLE[route])

    # --- body and parameter kinds ----------------------------------------------------------------

    def _post_case(self, rng, kind: str, detail: str, routes, request: dict, *, may_succeed=False) -> HostileCase:
        route = rng.choice(routes)
        path = subject_path(f"bi-hostile-{rng.randrange(1 << 32):08x}", "/faces") if route == ENROL else route.split(" ", 1)[1]
        return HostileCase(kind, f"{detail} -> {route}", "POST", path, route, request, ROUTE_ROLE[route], may_succeed)

    def _invalid_base64(self, rng):
        text = rng.choice(INVALID_BASE64)
        field_name = rng.choice(("image", "image", "image2"))
        body = {"image": text} if field_name == "image" else {"image": base64.b64encode(_read(self.probe_face)).decode(), "image2": text}
        routes = (VERIFY,) if field_name == "image2" else IMAGE_ROUTES
        return self._post_case(rng, "invalid_base64", f"{field_name}={text[:24]!r}", routes, json_request(body))

    def _wrong_json(self, rng):
        good = base64.b64encode(_blank_png_64()).decode()
        bodies: list[tuple[str, bytes]] = [
            (f"image={value!r}", json.dumps({"image": value}).encode())
            for value in (12, 1.5, True, None, [], ["a"], {}, {"data": good}, -1)
        ] + [
            (f"top_k={value!r}", json.dumps({"image": good, "top_k": value}).encode())
            for value in ("five", "5", -1, 0, 101, 10**30, 2.5, True, None, [5], {"k": 5})
        ] + [
            (f"subject_id={value!r}", json.dumps({"image": good, "subject_id": value}).encode())
            for value in (12, ["x"], {"id": "x"}, True, "", "../../etc/passwd")
        ] + [
            ("image2=12", json.dumps({"image": good, "image2": 12}).encode()),
            ("image+image2+subject_id", json.dumps({"image": good, "image2": good, "subject_id": "x"}).encode()),
            ("unknown field", json.dumps({"image": good, "extra": 1}).encode()),
            ("no image", b"{}"),
            ("array", b"[1, 2, 3]"),
            ("string", b'"image"'),
            ("number", b"42"),
            ("null", b"null"),
            ("empty body", b""),
            ("not json", b"{image: nope"),
            ("trailing garbage", json.dumps({"image": good}).encode() + b"}}"),
            ("duplicate keys", b'{"image": 1, "image": "' + good.encode() + b'"}'),
            ("NaN/Infinity", b'{"image": "' + good.encode() + b'", "top_k": NaN, "x": Infinity}'),
            ("5000-digit int", b'{"image": "' + good.encode() + b'", "top_k": ' + b"9" * 5000 + b"}"),
            ("1e999", b'{"image": "' + good.encode() + b'", "top_k": 1e999}'),
            ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
            ("deep object", b'{"image": "' + good.encode() + b'", "x": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001),
            ("invalid utf-8", b'{"image": "\xff\xfe\xfd"}'),
            ("utf-16 with BOM", json.dumps({"image": good}).encode("utf-16")),
            ("lone surrogate", b'{"image": "\\ud800"}'),
            ("NUL in JSON", b'{"image": "\x00"}'),
        ]
        detail, body = rng.choice(bodies)
        # Valid JSON in the end (the last duplicate key wins, UTF-16 is JSON) or coerced the way form
        # fields are ("5" and true are 5 and 1): these may be answered 2xx where the route allows them.
        lenient = detail in ("top_k='5'", "top_k=True", "duplicate keys", "utf-16 with BOM")
        return self._post_case(rng, "wrong_json", detail, READ_ONLY_IMAGE_ROUTES if lenient else IMAGE_ROUTES,
                               {"content": body, "headers": {"content-type": "application/json"}}, may_succeed=lenient)

    def _wrong_content_type(self, rng):
        _, photo = self._photo(rng)
        variants = {
            "text/plain": (photo, "text/plain"),
            "application/xml": (b"<image>x</image>", "application/xml"),
            "form-urlencoded": (b"image=abc&top_k=5", "application/x-www-form-urlencoded"),
            "image/jpeg raw body": (photo, "image/jpeg"),
            "multipart without boundary": (photo, "multipart/form-data"),
            "multipart wrong boundary": (b"--other\r\n\r\nx\r\n--other--\r\n", "multipart/form-data; boundary=expected"),
            "multipart garbage": (photo, "multipart/form-data; boundary=xyz"),
            "json charset utf-32": (json.dumps({"image": "aGVsbG8="}).encode("utf-32"), "application/json; charset=utf-32"),
            "unicode content type": (b"{}", "application/j\u00e9son".encode()),
            "very long content type": (b"{}", "application/" + "x" * 8000),
        }
        name = rng.choice(sorted(variants))
        body, content_type = variants[name]
        return self._post_case(rng, "wrong_content_type", name, IMAGE_ROUTES,
                                    {"content": body, "headers": {"content-type": content_type}})

    def _multipart_shape(self, rng):
        stem, photo = self._photo(rng)
        file = (f"{stem}.jpg", photo, "image/jpeg")
        variants = {
            "field named file": ({"files": {"file": file}}, IMAGE_ROUTES),
            "image as text field": ({"data": {"image": base64.b64encode(photo).decode()}}, IMAGE_ROUTES),
            "two image files": ({"files": [("image", file), ("image", file)]}, IMAGE_ROUTES),
            "no file, only top_k": ({"data": {"top_k": "5"}, "files": {"other": ("x.txt", b"x", "text/plain")}}, (IDENTIFY,)),
            "top_k not a number": ({"files": {"image": file}, "data": {"top_k": "lots"}}, (IDENTIFY,)),
            "top_k out of range": ({"files": {"image": file}, "data": {"top_k": "100000"}}, (IDENTIFY,)),
            "image2 on identify": ({"files": {"image": file, "image2": file}}, (IDENTIFY,)),
            "unknown text field": ({"files": {"image": file}, "data": {"extra": "1"}}, IMAGE_ROUTES),
            "100 text fields": ({"files": {"image": file}, "data": {f"f{i}": "x" for i in range(100)}}, IMAGE_ROUTES),
            "verify with neither reference": ({"files": {"image": file}}, (VERIFY,)),
            "verify subject_id is a traversal": ({"files": {"image": file}, "data": {"subject_id": "../../etc/passwd"}}, (VERIFY,)),
            "empty file": ({"files": {"image": ("empty.jpg", b"", "image/jpeg")}}, IMAGE_ROUTES),
        }
        name = rng.choice(sorted(variants))
        request, routes = variants[name]
        # Only refusable shapes reach enrolment: a well-formed photo there would be a legitimate enrolment.
        if name in ("unknown text field", "100 text fields"):
            routes = READ_ONLY_IMAGE_ROUTES
        may_succeed = name == "unknown text field"
        return self._post_case(rng, "multipart_shape", name, routes, request, may_succeed=may_succeed)

    def _hostile_subject_id(self, rng):
        subject_id = rng.choice(HOSTILE_SUBJECT_IDS)
        operation = rng.choice(("enrol", "get", "delete", "verify"))
        detail = f"{subject_id[:40]!r}{'…' if len(subject_id) > 40 else ''} on {operation}"
        face = rng.choice(self.live_faces)
        if operation == "enrol":
            request = {"files": {"image": (face.name, _read(face), "image/jpeg")}}
            return HostileCase("hostile_subject_id", detail, "POST", subject_path(subject_id, "/faces"), ENROL, request, "enrol")
        if operation == "verify":
            request = json_request({"image": base64.b64encode(_read(self.probe_face)).decode(), "subject_id": subject_id})
            return HostileCase("hostile_subject_id", detail, "POST", "/api/v1/verify", VERIFY, request, "search")
        method, route = ("GET", GET_SUBJECT) if operation == "get" else ("DELETE", DELETE_SUBJECT)
        return HostileCase("hostile_subject_id", detail, method, subject_path(subject_id), route, {}, "enrol")

    def _unknown_subject(self, rng):
        subject_id = rng.choice((f"bi-unknown-{rng.randrange(1 << 48):012x}", "A" * 128, "0", "a.b:c@d-e"))
        operation = rng.choice(("get", "delete", "verify"))
        if operation == "verify":
            request = json_request({"image": base64.b64encode(_read(self.probe_face)).decode(), "subject_id": subject_id})
            return HostileCase("unknown_subject", f"{subject_id} on verify", "POST", "/api/v1/verify", VERIFY, request, "search")
        method, route = ("GET", GET_SUBJECT) if operation == "get" else ("DELETE", DELETE_SUBJECT)
        return HostileCase("unknown_subject", f"{subject_id} on {operation}", method, subject_path(subject_id), route, {}, "enrol")

    def _auth(self, rng):
        blank = ("blank.png", _blank_png_64(), "image/png")
        headers_variants = {
            "no key": {},
            "bare bearer": {"authorization": "Bearer"},
            "bogus bearer": {"authorization": "Bearer ufme.admin.not-the-key"},
            "basic auth": {"authorization": "Basic YWRtaW46YWRtaW4="},
            "bogus x-api-key": {"x-api-key": "ufme.admin.guess"},
            "huge key": {"authorization": "Bearer " + "k" * 16_000},
            "non-ascii key": {"authorization": "Bearer ключ".encode()},
        }
        # With separate role keys these are 403; with one admin key for all roles, the body is refused instead.
        wrong_roles = {
            "search key enrols": ("POST", subject_path("bi-wrong-role", "/faces"), ENROL, {"files": {"image": blank}}, "search"),
            "search key deletes": ("DELETE", subject_path("bi-wrong-role"), DELETE_SUBJECT, {}, "search"),
            "enrol key identifies": ("POST", "/api/v1/identify", IDENTIFY, {"files": {"image": blank}}, "enrol"),
            "enrol key reads the gallery": ("GET", "/api/v1/gallery", GALLERY, {}, "enrol"),
            "search key reads the audit": ("GET", "/api/v1/audit", AUDIT, {"params": {"limit": "1"}}, "search"),
            "enrol key loads a demo": ("POST", "/api/v1/demo/load", DEMO_LOAD, json_request({"subjects": []}), "enrol"),
        }
        if rng.random() < 0.6:
            name = rng.choice(sorted(headers_variants))
            route = rng.choice((ENROL, DELETE_SUBJECT, IDENTIFY, GALLERY, DEMO_LOAD))
            method, path = route.split(" ", 1)
            path = path.replace("{id}", "bi-no-auth")
            request: dict = {"headers": headers_variants[name]}
            if route in (ENROL, IDENTIFY):
                request["files"] = {"image": (f"{self.live_faces[0].name}", _read(self.live_faces[0]), "image/jpeg")}
            elif route == DEMO_LOAD:
                request = {**json_request({}), "headers": {**headers_variants[name], "content-type": "application/json"}}
            return HostileCase("auth", f"{name} -> {route}", method, path, route, request, None)
        name = rng.choice(sorted(wrong_roles))
        method, path, route, request, role = wrong_roles[name]
        # Answered by an admin key (one key for every role), these requests are harmless reads or refusals.
        return HostileCase("auth", name, method, path, route, request, role, may_succeed=route in (IDENTIFY, GALLERY, AUDIT, DEMO_LOAD))

    def _admin_params(self, rng):
        audit_params = [
            {"since": "inf"}, {"since": "nan"}, {"until": "-inf"}, {"since": "1e999"}, {"since": "-1e20"},
            {"until": "99999999999999"}, {"since": "abc"}, {"limit": "0"}, {"limit": "1001"}, {"limit": "-1"},
            {"offset": "-1"}, {"offset": "9" * 5000}, {"operation": "\u202e\x00"}, {"subject_id": "../../etc/passwd"},
        ]
        demo_bodies = [
            {"images_per_subject": 0}, {"images_per_subject": 21}, {"images_per_subject": "one"},
            {"subjects": "everyone"}, {"subjects": [1, 2]}, {"subjects": ["x"] * 1001}, {"folder": 5},
            {"folder": "/nonexistent/ufme-demo"}, {"folder": ""}, {"unknown": True}, [],
        ]
        if rng.random() < 0.5:
            params = rng.choice(audit_params)
            filters_only = set(params) <= {"operation", "subject_id"}  # odd filters match nothing: 200, no records
            return HostileCase("admin_params", f"audit {params}"[:80], "GET", "/api/v1/audit", AUDIT, {"params": params},
                               "admin", may_succeed=filters_only)
        body = rng.choice(demo_bodies)
        return HostileCase("admin_params", f"demo/load {body}"[:80], "POST", "/api/v1/demo/load", DEMO_LOAD, json_request(body), "admin")

    def _method_route(self, rng):
        variants = [
            ("PUT", "/api/v1/identify"), ("PATCH", "/api/v1/subjects/bi-x"), ("GET", "/api/v1/identify"),
            ("DELETE", "/api/v1/gallery"), ("OPTIONS", "/api/v1/verify"), ("TRACE", "/api/v1/analyze"),
            ("GET", "/api/v1/nothing"), ("GET", "/api/v1/subjects/"), ("POST", "/api/v1/subjects//faces"),
            ("GET", "/api/v1/%2e%2e/%2e%2e/etc/passwd"), ("GET", "//api//v1//gallery"), ("GET", "/" + "a" * 30_000),
            ("POST", "/api/v1/subjects/bi-x/faces/extra"), ("GET", "/api/v1/subjects/bi-x?%zz=1"),
        ]
        method, path = rng.choice(variants)
        return HostileCase("method_route", f"{method} {path[:60]}", method, path, "other", {}, "admin")


# --- cached encodings (built once per process; each is a function of its arguments only) ------------


@functools.cache
def _read(path: Path) -> bytes:
    return path.read_bytes()


@functools.cache
def _png_of(path: Path) -> bytes:
    return hi.encode(Image.open(path).convert("RGB"), "PNG", compress_level=1)


@functools.lru_cache(maxsize=256)
def _odd_encoding_of(path: Path | None, name: str) -> bytes:
    """Encoding `name` of the photo at `path`, or of a blank picture (no face) for None."""
    photo = Image.open(path) if path is not None else Image.new("RGB", (320, 240), (90, 120, 150))
    return hi.ODD_ENCODINGS[name](photo)


@functools.cache
def _blank_png_64() -> bytes:
    return hi.encode(Image.new("RGB", (64, 64)), "PNG")


@functools.lru_cache(maxsize=64)
def _exif_jpeg(path: Path, orientation: int) -> bytes:
    return hi.with_exif_orientation(Image.open(path), orientation)


@functools.lru_cache(maxsize=64)
def _animated_gif_of(path: Path) -> bytes:
    return hi.animated(Image.open(path), "GIF")


@functools.cache
def _zlib_bomb() -> bytes:
    return hi.png_solid(10_000, 10_000)


@functools.cache
def _text_bomb() -> bytes:
    return hi.png_text_bomb()


@functools.cache
def _png_20000() -> bytes:
    return hi.png_solid(20_000, 20_000, bit_depth=1)


@functools.lru_cache(maxsize=8)
def _blank_png(width: int, height: int) -> bytes:
    return hi.png_solid(width, height, color_type=2)
