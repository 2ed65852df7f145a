"""The UFME-Ray application of a Serve config (serve_config.yaml, a RayService's serveConfigV2).

Light on purpose: the Kubernetes and cluster code read the application's `args` through these
models without importing Ray Serve; `serving/app.py` validates the same `args` in `build_app`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, ValidationError

from ufme_ray import execution_providers
from ufme_ray.config import ConfigError, GallerySettings, RuntimeSettings, UfmeSettings

APP_NAME = "ufme"  # the application's name in the Serve config
GATEWAY_DEPLOYMENT = "Gateway"  # the deployment whose user_config is the live settings (config.LiveConfig)
# The custom Ray resource of shard nodes (KubeRay's shard worker group, `ufme-ray join --shard-slots`):
# with `shard_resources: {ufme_shard: 1}` each shard actor takes one slot, so shards run only there.
SHARD_RESOURCE = "ufme_shard"
# The stage deployments of the application (serving/app.py binds them) and the stage each runs.
STAGE_DEPLOYMENTS = {"Detector": "detector", "Quality": "quality", "Liveness": "liveness", "Morph": "morph",
                     "Embedder": "embedder"}


class AppArgs(BaseModel):
    """The `args` block of serve_config.yaml."""

    model_config = ConfigDict(extra="forbid")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="UfmeSettings overrides; unset keys come from the UFME_* variables, then the UFME_CONFIG file, "
        "of the process that builds the application (`resolve_settings`), then the defaults.",
    )
    shard_num_cpus: NonNegativeFloat = Field(0.1, description="CPUs reserved by each shard actor.")
    shard_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources a shard actor needs (pins shards to shard nodes)."
    )

    def resolve_settings(self) -> UfmeSettings:
        """The settings every deployment of the application gets (as `transport_json`): the defaults <
        the UFME_CONFIG file < UFME_* < these args' `settings`, in the process that builds the app.
        Live sections then take the Gateway's `user_config` on top, per replica (`LiveConfig.overlay`).

        Raises ConfigError naming every bad field.
        """
        return UfmeSettings.load(**self.settings)

    @property
    def num_shards(self) -> int:
        """The gallery's shard count these args set (the settings default if they set none).

        Raises ConfigError if their gallery settings are invalid.
        """
        try:
            return GallerySettings.model_validate(self.settings.get("gallery") or {}).num_shards
        except ValidationError as exc:
            raise ConfigError(f"the Serve config's gallery settings are invalid: {exc}") from None


class ServeApplication(BaseModel):
    """One entry of the Serve config's `applications`; only what UFME-Ray reads is typed."""

    model_config = ConfigDict(extra="allow")
    name: str
    args: dict[str, Any] | None = None
    deployments: list[dict[str, Any]] = Field(default_factory=list)


class ServeConfig(BaseModel):
    """A Serve config (what `serve deploy` takes); only the applications are typed."""

    model_config = ConfigDict(extra="allow")
    applications: list[ServeApplication] = Field(default_factory=list)


def _ufme_app(serve_config: str | Mapping[str, Any]) -> ServeApplication:
    if isinstance(serve_config, str):
        try:
            serve_config = yaml.safe_load(serve_config)
        except yaml.YAMLError as exc:
            raise ConfigError(f"the Serve config is not YAML: {exc}") from None
    try:
        apps = ServeConfig.model_validate(serve_config or {}).applications
    except ValidationError as exc:
        raise ConfigError(f"the Serve config is invalid: {exc}") from None
    app = next((app for app in apps if app.name == APP_NAME), None)
    if app is None:
        raise ConfigError(f"the Serve config has no application {APP_NAME!r}")
    return app


def app_args(serve_config: str | Mapping[str, Any]) -> AppArgs:
    """The `args` of the ufme application in a Serve config (YAML text or parsed).

    Raises ConfigError if the text is not YAML, the application is missing, or its args are invalid.
    """
    return _args(_ufme_app(serve_config))


def _args(app: ServeApplication) -> AppArgs:
    try:
        return AppArgs.model_validate(app.args or {})
    except ValidationError as exc:
        raise ConfigError(f"the Serve config (application {APP_NAME!r}) is invalid: {exc}") from None


def gpu_placement_problems(serve_config: str | Mapping[str, Any]) -> list[str]:
    """Stage deployments whose GPU reservation and execution providers disagree (none: []).

    Ray hides every GPU from an actor that reserves none, so a stage asking for CUDA or TensorRT
    without `ray_actor_options.num_gpus` runs on CPU, and one reserving a GPU with CPU-only
    providers holds it for nothing. The providers read are those of the app's `args.settings`
    (where a Serve config sets them). Raises ConfigError like `app_args`.
    """
    app = _ufme_app(serve_config)
    try:
        runtime = RuntimeSettings.model_validate(_args(app).settings.get("runtime") or {})
    except ValidationError as exc:
        raise ConfigError(f"the Serve config's runtime settings are invalid: {exc}") from None
    problems = []
    for deployment in app.deployments:
        stage = STAGE_DEPLOYMENTS.get(deployment.get("name"))
        if stage is None:
            continue
        gpus = (deployment.get("ray_actor_options") or {}).get("num_gpus") or 0
        asked = execution_providers.names(runtime.providers_for(stage))
        on_gpu = bool(execution_providers.NVIDIA & set(asked))
        if on_gpu and not gpus:
            problems.append(f"{deployment['name']} asks for {asked} but reserves no GPU (ray_actor_options.num_gpus)")
        elif gpus and not on_gpu:
            problems.append(f"{deployment['name']} reserves {gpus} GPU but its providers {asked} run on none")
    return problems
