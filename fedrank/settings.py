"""Settings shared by every role: a TOML file plus `FEDRANK_*` environment overrides (pydantic-settings).

Each role subclasses `AgentSettings` in its own package (`edge_agent.settings.EdgeSettings`, ...).
Nested fields take `__` in the environment, e.g. `FEDRANK_BROKER__HOST=10.0.0.2`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from proto.mqtt_options import MqttOptions
from proto.topics import DEFAULT_ROOT

S = TypeVar("S", bound="AgentSettings")


class ConfigError(Exception):
    """A configuration that cannot start an agent; the message names the field and the reason."""


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDRANK_", env_nested_delimiter="__", extra="forbid")

    ROLE: ClassVar[str] = ""
    _toml_file: ClassVar[Path | None] = None

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="this agent's id; also its MQTT client id")
    state_dir: Path = Field(Path("/var/lib/fedrank"), description="where state that survives restarts is written")
    topic_root: str = Field(DEFAULT_ROOT, description="root of the topic tree")
    broker: MqttOptions = Field(default_factory=MqttOptions, description="MQTT broker connection")
    log_level: str = Field("INFO", description="logging level (runtime only, never persisted)")
    log_json: bool | None = Field(None, description="JSON log lines; default: JSON when stderr is not a terminal")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Prometheus metrics port; off if unset")
    status_interval_s: float = Field(10.0, gt=0, description="how often the agent republishes its status")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)


def load_settings(cls: type[S], path: Path | None = None, **overrides: Any) -> S:
    """Read `path` (TOML) with `FEDRANK_*` overrides; raise ConfigError naming the field and the reason."""
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist")
    # A subclass per call carries the file path, so concurrent loads of different files do not interfere.
    bound = type(cls.__name__, (cls,), {"_toml_file": Path(path) if path else None})
    try:
        return cls.model_validate(bound(**overrides).model_dump())
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
            lines.append(f"{where}: {err.get('msg')}")
        where_file = f" {path}" if path else ""
        raise ConfigError(f"invalid {cls.ROLE or cls.__name__} config{where_file}: " + "; ".join(lines)) from exc
    except (OSError, ValueError) as exc:  # unreadable file or TOML syntax error
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
