"""One validated settings model for the whole engine.

Sources, highest priority first: explicit keyword arguments (CLI flags, a Serve config's
`args.settings`), environment variables (`UFME_<FIELD>`, nested with `__`:
`UFME_THRESHOLDS__SIMILARITY_MIN=0.5`), a YAML settings file (`--config`, else `UFME_CONFIG`), the
defaults. On a Serve replica the live sections (`LiveConfig`) then take the Gateway's `user_config`
on top, field by field (`LiveConfig.overlay`). docs/SETTINGS.md has the table. Every model forbids
unknown keys so a typo fails at start instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import ipaddress
import os
from collections.abc import Mapping

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from ufme_ray.execution_providers import CPU, Provider, ProviderList, StageName
from ufme_ray.fault_injection import TestingSettings, refuse_unswitched_faults


class ConfigError(ValueError):
    """Settings failed validation; the message names every bad field and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelChoice(_Strict):
    """Which model of the manifest runs each stage (names from `ufme-ray models list`)."""

    detector: str = Field("yunet_2023mar", description="Face detector (boxes + 5 landmarks).")
    quality: str | None = Field("lightqnet_dm100", description="Face quality model; null disables the stage.")
    liveness: list[str] = Field(
        default_factory=lambda: ["minifasnet_v2", "minifasnet_v1se"],
        description="PAD models; their live probabilities are averaged. Empty disables the stage.",
    )
    morph: str | None = Field(None, description="Morph-attack detector; null reports 'not_configured'.")
    embedder: str = Field("mobilefacenet_foamliu", description="Recognition model producing the template.")


class Thresholds(_Strict):
    """Decision thresholds. `None` means: the default the model manifest gives for the chosen model."""

    liveness_min: float | None = Field(None, ge=0, le=1, description="A face is live if its live score >= this.")
    morph_max: float | None = Field(None, ge=0, le=1, description="A face is bona fide if its morph score < this.")
    quality_min: float | None = Field(None, ge=0, le=1, description="A face is usable if its quality >= this.")
    similarity_min: float | None = Field(
        None, ge=-1, le=1, description="Cosine similarity at or above which two faces match."
    )
    detection_min: float | None = Field(None, ge=0, le=1, description="Detector score for a face to count.")


GateName = Literal["quality", "liveness", "morph"]
Capture = Literal["live", "stored"]
Ingress = Literal["serve-proxy", "haproxy"]  # what takes HTTP on port 8000 (NetworkSettings.ingress)
QualityFilter = Literal["none", "low", "medium", "high", "auto"]


class GatePolicy(_Strict):
    """Which gates each operation enforces. Every gate is always scored and reported."""

    enrol: list[GateName] = Field(
        default_factory=lambda: ["quality", "liveness", "morph"], description="Gates a face must pass to be enrolled."
    )
    identify: list[GateName] = Field(
        default_factory=lambda: ["liveness", "morph"], description="Gates a probe face must pass to be searched."
    )
    verify: list[GateName] = Field(
        default_factory=lambda: ["liveness", "morph"], description="Gates a probe face must pass to be compared."
    )
    demo: list[GateName] = Field(
        default_factory=lambda: ["quality"],
        description="Gates for demo-gallery enrolment (stored photos: liveness is not meaningful).",
    )
    enrol_dominance_ratio: float = Field(
        3.0, ge=1.0, description="With several faces, enrolment takes the largest only if it is this many times "
        "larger (by area) than the next; otherwise the photo is ambiguous and refused.",
    )
    capture: Capture = Field(
        "live",
        description="How a photo arrives when a request does not say: live (taken now by a camera the operator "
        "controls: liveness enforced) or stored (a file, e.g. an ID photo: liveness not applicable, quality and "
        "morph enforced).",
    )


Role = Literal["admin", "enrol", "search"]


class ApiKeySpec(_Strict):
    """One API key as the service stores it: an id (safe to log), the sha256 of the secret, the
    galleries it may use and its quota."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$", description="Public key id, recorded in the audit trail.")
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 hex of the whole key string.")
    # Gallery ids follow the subject id rule (ufme_ray.gallery.ids.SUBJECT_ID_PATTERN), repeated here
    # because the settings sit below the gallery in the import layers; a unit test keeps them equal.
    galleries: (
        Annotated[list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@_-]{0,127}$")]], Field(min_length=1)]
        | Literal["*"]
    ) = Field("*", description="Galleries the key may use; '*' (the default, also for keys stored without it): all.")
    rate: float | None = Field(
        None, gt=0, description="Requests per second the key may send on average, all Gateway replicas together "
        "(429 with Retry-After beyond); None: no quota."
    )
    burst: int | None = Field(
        None, ge=1, description="Requests the key may send at once after being idle; None: the rate rounded up (at least 1)."
    )
    captures: Annotated[list[Capture], Field(min_length=1)] | Literal["*"] = Field(
        "*", description="Capture types the key may declare (a kiosk key: ['live']); '*': any. A key allowed one "
        "only gets it when a request does not say.",
    )

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> "ApiKeySpec":
        if self.burst is not None and self.rate is None:
            raise ValueError(f"key {self.id!r}: burst is set without rate")
        return self


def _secret_json(secret: SecretStr, info) -> str:
    """Masked in every JSON dump except `UfmeSettings.transport_json`, which hands settings to replicas."""
    return secret.get_secret_value() if info.context and info.context.get("reveal_secrets") else "**********"


class AuditSettings(_Strict):
    """Subject ids in audit records are HMAC-SHA256 pseudonyms under this key, so an erased
    subject's id is not kept in storage while the trail stays searchable by id."""

    subject_key: SecretStr | None = Field(None, description="base64 of at least 32 random bytes (e.g. from a Secret).")
    subject_key_file: Path | None = Field(None, description="A file holding that base64 key (`ufme-ray up` creates one).")
    allow_plain_subject_ids: bool = Field(
        False,
        description=(
            "Without a key, store subject ids as they are. Off: such records keep an erased subject's id, "
            "so the service refuses to start without subject_key or subject_key_file unless this is set."
        ),
    )
    refusal_window_s: float = Field(
        60.0, gt=0, le=3600, description="Refusals of one kind after the first in this window are written as one counted record."
    )
    refusal_max_kinds: int = Field(
        100, ge=1, le=100_000, description="Kinds of refusal kept apart per window; beyond it key id and client fold into '*'."
    )

    @field_serializer("subject_key", when_used="json")
    def _key_json(self, key: SecretStr | None, info) -> str | None:
        if key is None:
            return None
        return _secret_json(key, info)


class AuthSettings(_Strict):
    keys: list[ApiKeySpec] = Field(default_factory=list, description="Keys given inline (e.g. from a Secret as JSON).")
    keys_file: Path | None = Field(
        None, description="A JSON file of keys (same fields), re-read when it changes; `ufme-ray keys create` writes it."
    )


class EncryptionSettings(_Strict):
    """Templates encrypted at rest (AES-256-GCM). Off while key_id is None."""

    key_id: str | None = Field(None, description="Id of the key that encrypts new objects (the current key).")
    keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Key id -> base64 of 32 random bytes; keep old ids until a compaction has rewritten their objects.",
    )
    accept_plaintext: bool = Field(
        False,
        description="Migration of a gallery written before encryption was on: also read its unencrypted objects "
        "under events/ and snapshots/ (new objects are always encrypted; a compaction rewrites the rest). Remove it "
        "once `ufme-ray encryption status` reports no plaintext objects left: from then on a plaintext object is "
        "refused as planted. Ignored while key_id is None.",
    )

    @field_serializer("keys", when_used="json")
    def _keys_json(self, keys: dict[str, SecretStr], info) -> dict[str, str]:
        return {key_id: _secret_json(secret, info) for key_id, secret in keys.items()}

    @model_validator(mode="after")
    def _current_key_present(self) -> "EncryptionSettings":
        if self.key_id is not None and self.key_id not in self.keys:
            raise ValueError(f"encryption.key_id {self.key_id!r} is not among encryption.keys")
        return self


class DuplicatePolicy(_Strict):
    """What enrolment does when the face already matches another subject."""

    action: Literal["reject", "warn", "allow"] = Field(
        "reject", description="reject: 409 naming the other subject; warn: enrol and say so; allow: no search."
    )
    threshold: float | None = Field(
        None, ge=-1, le=1, description="Similarity at which a face counts as that subject; None: the match threshold."
    )

    def threshold_or(self, thresholds) -> float:
        """This policy's threshold, or the match threshold in force (`thresholds.similarity_min`)."""
        return self.threshold if self.threshold is not None else thresholds.similarity_min


class LiveConfig(_Strict):
    """What changes without restarting replicas (Serve `user_config`, applied by `reconfigure`).

    A `user_config` is partial: it changes only the fields it names (`overlay`), everything else
    keeps the replica's settings (file < UFME_* < args.settings as resolved at deploy).
    """

    thresholds: Thresholds = Field(default_factory=Thresholds)
    gates: GatePolicy = Field(default_factory=GatePolicy)
    duplicates: DuplicatePolicy = Field(default_factory=DuplicatePolicy)

    def overlay(self, user_config: Mapping[str, Any] | None) -> "LiveConfig":
        """This config with the fields `user_config` sets replaced (nested mappings merge key by key;
        a list or a null replaces whole). None or {} changes nothing; an unknown key or a bad value
        raises ValidationError, naming it."""
        if user_config is None:
            return self
        if not isinstance(user_config, Mapping):
            return LiveConfig.model_validate(user_config)  # raises: a user_config must be a mapping
        return LiveConfig.model_validate(deep_merge(self.model_dump(), dict(user_config)))


LIVE_SECTIONS = tuple(LiveConfig.model_fields)  # the settings sections a Serve user_config may change
CONFIG_ENV = "UFME_CONFIG"  # the settings file every process reads when no --config is given


class DetectionSettings(_Strict):
    nms_iou: float = Field(0.4, gt=0, lt=1, description="IoU above which overlapping boxes are merged.")
    min_face_px: PositiveInt = Field(20, description="Faces whose shorter box side is below this are ignored.")
    max_faces: PositiveInt = Field(50, description="At most this many faces are returned per image (largest first).")
    input_size: Literal["fit", "model"] = Field(
        "fit",
        description="model: every image is letterboxed into the model's input (640x640), one fixed shape (what "
        "GPUs want: a new shape costs CUDA a new algorithm search). fit: the same scale, but the frame is cut to "
        "the image's shape, padded only to a multiple of 32: a 4:3 photo runs at 640x480, a 16:9 one at 640x384 "
        "(25%/40% fewer pixels; the same faces but for some cut by the image's edge); square photos run as with model.",
    )


class ImageLimits(_Strict):
    max_bytes: PositiveInt = Field(10_000_000, description="Encoded images larger than this are refused (413).")
    max_pixels: PositiveInt = Field(
        40_000_000, description="Images whose header declares more pixels are refused before decoding (413)."
    )
    min_side_px: PositiveInt = Field(16, description="Images smaller than this on either side are refused (400).")


class RuntimeSettings(_Strict):
    providers: ProviderList = Field(
        default_factory=lambda: [CPU],
        description="onnxruntime execution providers, most preferred first: a name or a [name, {option: value}] "
        "pair (ufme_ray.execution_providers). Those this machine's onnxruntime lacks are skipped with a warning; "
        "CPUExecutionProvider is always the last resort.",
    )
    stage_providers: dict[StageName, ProviderList] = Field(
        default_factory=dict, description="Per stage, a list that replaces `providers` for that stage's models."
    )
    intra_op_threads: int = Field(
        0, ge=0, description="onnxruntime threads per session; 0 lets onnxruntime choose (all cores)."
    )
    spin_threads: bool = Field(
        False,
        description="Let a session's idle intra-op threads spin for the next run instead of sleeping: lower latency "
        "for one session on cores of its own. With several sessions in a process (the in-process chain runs five) "
        "the spinning threads take the cores the running one needs: on 2 cores that chain ran at 40.5 ms p50 with "
        "spinning, 25.3 ms without. No effect at intra_op_threads 1 (the session has no pool).",
    )
    verify_checksums: bool = Field(True, description="Check each model file's sha256 against the manifest on load.")
    precision: Literal["fp32", "int8"] = Field(
        "fp32",
        description="int8: the detector and the embedder run the int8 variants `ufme-ray models quantize` recorded "
        "in the model folder (refused at start if one is missing); quality, liveness and morph stay fp32.",
    )

    def providers_for(self, stage: StageName) -> list[Provider]:
        """The providers the models of `stage` ask for, most preferred first."""
        return self.stage_providers.get(stage, self.providers)


class IndexSettings(_Strict):
    """How a shard indexes its templates (exact while small, IVF-PQ with exact rerank once large)."""

    exact_max_vectors: PositiveInt = Field(
        50_000, description="Up to this many live vectors a shard uses an exact IndexFlatIP."
    )
    pq_bytes_per_vector: PositiveInt | None = Field(
        None, description="PQ code size in bytes; None: 32 for d<=128, 64 above (about 64 B/vector at 512-d)."
    )
    nlist: PositiveInt | None = Field(None, description="IVF lists; None: about 4*sqrt(N), capped by training size.")
    nprobe: PositiveInt | None = Field(
        None,
        description="IVF lists visited per query; None: a quarter of nlist (1000 of 4000 at 1M vectors), "
        "which measured recall@1 >= 0.99 on face-like data (scripts/bench_index.py).",
    )
    rerank_candidates: PositiveInt = Field(100, description="PQ candidates re-scored exactly per query.")
    rerank_store: Literal["ram", "mmap"] = Field(
        "ram", description="Where the float16 rerank vectors live: in RAM, or memory-mapped from local disk."
    )
    rerank_dir: Path | None = Field(
        None,
        description="Local folder for memory-mapped rerank stores (rerank_store='mmap'); "
        "None: a new temporary folder per shard.",
    )
    train_sample_max: PositiveInt = Field(
        200_000, description="At most this many vectors train the IVF-PQ quantisers."
    )


class LogSettings(_Strict):
    group_commit_window_s: NonNegativeFloat = Field(
        0.005, description="Appends arriving within this window share one durable segment write."
    )
    group_commit_max_events: PositiveInt = Field(4096, description="A group commit flushes at this many events.")
    follow_interval_s: PositiveFloat = Field(
        1.0,
        description="A shard that follows another writer's log (a new cluster beside the old one during an upgrade) "
        "applies its new segments this often; a writer looks this often for a newer writer's claim.",
    )


class GallerySettings(_Strict):
    num_shards: PositiveInt = Field(2, description="Shards; a subject lives on hash(subject_id) mod num_shards.")
    index: IndexSettings = Field(default_factory=IndexSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    max_galleries: PositiveInt = Field(
        10_000, description="Galleries the engine holds at most, `default` included; creating one more is refused (409)."
    )


class ImportSettings(_Strict):
    """Bulk import (`ufme-ray import`, a Ray Job running a Ray Data pipeline)."""

    batch_size: PositiveInt = Field(8, description="Photos per map_batches call of a scoring actor.")
    concurrency: PositiveInt = Field(2, description="Scoring actors (each loads every model once).")
    # Reservations, not limits: small so that the import schedules beside the Serve replicas of a
    # small cluster (the models use the cores they get either way).
    actor_num_cpus: float = Field(0.25, gt=0, description="CPUs each scoring actor reserves.")
    task_num_cpus: float = Field(0.1, gt=0, description="CPUs each read task reserves.")
    app_name: str = Field("ufme", description="The Serve application whose Searcher the import writes through.")


class CompactionSettings(_Strict):
    """The compaction job (`python -m ufme_ray.jobs.compact`, submitted by `ufme-ray compact`)."""

    retention_s: NonNegativeFloat = Field(
        3600.0,
        description="A superseded snapshot epoch, and the log segments only it needs, are deleted once its "
        "successor has been current this long (a shard that began restoring from it must be done); 0 deletes "
        "them at the end of the compaction that supersedes them, so erased subjects leave storage at once.",
    )
    deadline_s: float = Field(
        3600.0, gt=0, description="The job fails after this long, the previous epoch staying live "
        "(the original CronJob's activeDeadlineSeconds).",
    )
    work_dir: Path | None = Field(
        None, description="Local scratch folder of the per-shard build tasks; None: the system temporary folder."
    )
    task_num_cpus: float = Field(
        0.25, gt=0, description="CPUs each per-shard build task (a Ray task) reserves for scheduling; the FAISS "
        "build uses the node's cores whatever it reserves. Small by default: on a 2-core machine the Serve "
        "replicas reserve 1.35-2 CPUs, and a build asking for 1 waited forever (found by scripts/chaos.py).",
    )
    swap_concurrency: PositiveInt | None = Field(
        1, description="Shards loading the new snapshot at once (None: all). Loading is CPU-heavy (checksums, "
        "copies): with 5 shards on 2 cores, all at once raised the search p99 12.8x, one at a time 1.8x "
        "(scripts/bench_compaction.py). Raise it when every shard has its own node.",
    )
    namespace: str = Field(
        "ufme", min_length=1, description="Ray namespace of the shard actors to swap and of the compaction lock; "
        "the service's is 'ufme', another one addresses a second gallery's actors on the same cluster.",
    )
    crash_at: Literal["build", "swap"] | None = Field(
        None, description="Fault injection (needs testing.fault_injection): the job kills itself (SIGKILL) once "
        "the first shard is built, or once the first shard has swapped.",
    )
    delay_commit_s: NonNegativeFloat = Field(
        0.0, description="Fault injection (needs testing.fault_injection), 0 by default: the job waits this long "
        "between building and committing, holding the lock (a slow build).",
    )


class NetworkSettings(_Strict):
    """Where requests come from. Applied when `ufme-ray up` starts the local Ray head (not per deploy):
    Serve's HTTP proxy reads it from its environment as FORWARDED_ALLOW_IPS (`cluster.forwarded_allow_ips`)."""

    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="IPs or CIDRs of the proxies in front of Serve (the ingress) whose X-Forwarded-For / "
        "X-Forwarded-Proto count; from anyone else the peer address is the client (audit `client`). Empty: none.",
    )

    ingress: Ingress = Field(
        "serve-proxy",
        description="What takes HTTP on port 8000: Serve's proxy, or HAProxy (Ray's RAY_SERVE_ENABLE_HA_PROXY, with "
        "direct ingress: it forwards each request straight to a Gateway replica; needs the `haproxy` extra). "
        "HAProxy measured faster on 2 cores (README, \"Where an identify's time goes\") but adds no X-Forwarded-For: "
        "the Gateway sees HAProxy as the peer, so the audit `client` is HAProxy's address unless trusted_proxies "
        "names it and a proxy that sets X-Forwarded-For stands in front. HAProxy also binds 9101 (metrics) and 8404 (stats page) "
        "on every interface; a second such cluster on a machine needs RAY_SERVE_HAPROXY_METRICS_PORT and "
        "RAY_SERVE_HAPROXY_STATS_PORT of its own. Every node of a cluster starts with the same.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        # uvicorn takes an entry it cannot parse (a CIDR with host bits set included) for a host name
        # that no peer ever has, silently: refuse it here. Normalised, as uvicorn compares them.
        normalised = []
        for value in values:
            try:
                parsed = ipaddress.ip_network(value) if "/" in value else ipaddress.ip_address(value)
            except ValueError as exc:
                raise ValueError(f"trusted proxy {value!r} is not an IP address or CIDR: {exc}") from None
            normalised.append(str(parsed))
        return normalised


def _default_data_dir() -> Path:
    # Absolute, so the CLI, Serve replicas and shard actors (whose working folders differ) agree.
    return Path.home() / ".local" / "share" / "ufme-ray"


def _default_model_dir() -> Path:
    return Path.home() / ".cache" / "ufme-ray" / "models"


class UfmeSettings(BaseSettings):
    """Everything the engine needs to start. Invalid values fail at start (`ConfigError`)."""

    model_config = SettingsConfigDict(
        env_prefix="UFME_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    model_dir: Path = Field(
        default_factory=_default_model_dir,
        description="Folder holding the ONNX files (UFME_MODEL_DIR; `ufme-ray models pull` fills it).",
    )
    model_manifest: Path | None = Field(
        None, description="An extra manifest YAML (same schema as the packaged one) whose models are added."
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir, description="Local folder for embedded-default state."
    )
    storage_uri: str | None = Field(
        None,
        description="Root of all durable state: file:///… or s3://bucket/prefix?endpoint_override=…; "
        "None: file:// under data_dir/store.",
    )
    models: ModelChoice = Field(default_factory=ModelChoice)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    image: ImageLimits = Field(default_factory=ImageLimits)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    gallery: GallerySettings = Field(default_factory=GallerySettings)
    compaction: CompactionSettings = Field(default_factory=CompactionSettings)
    imports: ImportSettings = Field(default_factory=ImportSettings)
    gates: GatePolicy = Field(default_factory=GatePolicy)
    duplicates: DuplicatePolicy = Field(default_factory=DuplicatePolicy)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    testing: TestingSettings = Field(default_factory=TestingSettings)
    demo_dir: Path | None = Field(
        None, description="Folder of <subject>/<image> photos that POST /api/v1/demo/load enrols."
    )
    network: NetworkSettings = Field(default_factory=NetworkSettings)

    @field_validator("storage_uri")
    @classmethod
    def _storage_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("file://", "s3://")):
            raise ValueError(f"storage_uri {value!r} must start with file:// or s3://")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "UfmeSettings":
        if len(set(self.models.liveness)) != len(self.models.liveness):
            raise ValueError(f"models.liveness {self.models.liveness} names a model twice")
        refuse_unswitched_faults(self.compaction, self.testing)
        return self

    def transport_json(self) -> str:
        """These settings for another process of the cluster (replicas, shard actors, jobs), secrets included."""
        return self.model_dump_json(context={"reveal_secrets": True})

    def explicit_values(self) -> dict[str, Any]:
        """Only what a source set (file, UFME_*, overrides), as JSON-ready values, secrets included:
        what `ufme-ray up` forwards so the cluster's defaults and profile fill only the rest."""
        return self.model_dump(mode="json", exclude_unset=True, context={"reveal_secrets": True})

    def live_config(self) -> LiveConfig:
        """The live sections of these settings: what a replica applies before any `user_config`."""
        return LiveConfig(thresholds=self.thresholds, gates=self.gates, duplicates=self.duplicates)

    @property
    def resolved_storage_uri(self) -> str:
        if self.storage_uri is not None:
            return self.storage_uri
        return (self.data_dir.resolve() / "store").as_uri()

    @classmethod
    def load(cls, yaml_path: str | Path | None = None, **overrides: Any) -> "UfmeSettings":
        """Build settings from a YAML file, the environment and overrides (each outranks the one before).

        The file is `yaml_path` (a `--config` flag) or else the one UFME_CONFIG names: the flag wins.
        Raises ConfigError with every bad field named.
        """
        values: dict[str, Any] = {}
        if yaml_path is None or str(yaml_path) == "":
            yaml_path = os.environ.get(CONFIG_ENV) or None
        if yaml_path is not None:
            try:
                loaded = yaml.safe_load(Path(yaml_path).read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"cannot read settings file {yaml_path}: {exc}") from exc
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"settings file {yaml_path} must hold a mapping, not {type(loaded).__name__}")
            values = loaded or {}
        try:
            # The environment outranks the file, explicit overrides outrank both.
            merged = deep_merge(deep_merge(values, EnvSettingsSource(cls)()), overrides)
            return cls(**merged)
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(exc)) from exc


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` merged into `base`, recursing into nested mappings (neither is modified)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation_error(exc: ValidationError) -> str:
    lines = ["invalid UFME-Ray settings:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)
