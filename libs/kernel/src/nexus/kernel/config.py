"""Kernel configuration in TOML.

Looked up in order: `./config.toml`, `~/.config/nexus/config.toml`, `/etc/nexus/config.toml`;
the first file that exists wins; with none, defaults. Tests pass their own `search` list.
A file that exists but does not parse or validate is an error, never silently skipped.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import msgspec

Positive = Annotated[int, msgspec.Meta(ge=1)]


class KernelConfig(msgspec.Struct, kw_only=True, frozen=True):
    mailbox_capacity: Positive = 1024
    send_timeout_ms: Positive = 500
    handle_timeout_ms: Positive = 30_000


class LoggingConfig(msgspec.Struct, kw_only=True, frozen=True):
    level: Literal["trace", "debug", "info", "warn", "warning", "error"] = "info"
    format: Literal["compact", "json", "pretty"] = "compact"


class NexusConfig(msgspec.Struct, kw_only=True, frozen=True):
    kernel: KernelConfig = msgspec.field(default_factory=KernelConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)


class ConfigError(Exception):
    pass


def default_search_paths() -> list[Path]:
    return [Path("config.toml"), Path.home() / ".config" / "nexus" / "config.toml", Path("/etc/nexus/config.toml")]


def load_file(path: Path) -> NexusConfig:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
        return msgspec.convert(raw, NexusConfig)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except (tomllib.TOMLDecodeError, msgspec.ValidationError, OSError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_config(
    path: Path | str | None = None, *, search: Sequence[Path] | None = None
) -> tuple[NexusConfig, Path | None]:
    """The config and the file it came from (None: defaults). An explicit `path` must exist."""
    if path is not None:
        return load_file(Path(path)), Path(path)
    for candidate in default_search_paths() if search is None else search:
        if candidate.is_file():
            return load_file(candidate), candidate
    return NexusConfig(), None


TEMPLATE = """\
# Nexus kernel configuration. Looked up in ./config.toml, ~/.config/nexus/config.toml,
# /etc/nexus/config.toml (first found wins); every key is optional.

[kernel]
# Bounded mailbox size per agent: a send to a full mailbox waits (backpressure).
mailbox_capacity = {k.mailbox_capacity}
# How long a send waits for room in a full mailbox before SendTimeout (milliseconds).
send_timeout_ms = {k.send_timeout_ms}
# How long one handler may run before it is cancelled and reported as HandleTimeout (milliseconds).
handle_timeout_ms = {k.handle_timeout_ms}

[logging]
# trace | debug | info | warn | error
level = "{l.level}"
# compact | json | pretty
format = "{l.format}"
"""


def render_config(config: NexusConfig | None = None) -> str:
    config = config or NexusConfig()
    return TEMPLATE.format(k=config.kernel, l=config.logging)


def generate_config(path: Path | str, *, force: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_config())
    return path
