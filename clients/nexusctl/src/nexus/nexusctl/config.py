"""Where nexusctl talks to and with which key: flags, then an explicit --context, then NEXUS_URL /
NEXUS_API_KEY, then the config file's current context, then the `make run` defaults.

The config file (`$NEXUSCTL_CONFIG`, else `$XDG_CONFIG_HOME/nexus/nexusctl.yaml`, else
`~/.config/nexus/nexusctl.yaml`) looks like a kubeconfig:

    current-context: local
    contexts:
      - name: local
        url: http://127.0.0.1:8080
        api_key_file: ~/src/nexus/.nexus/admin.key
      - name: prod
        url: https://nexus.example.com
        api_key: nxk_...
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import yaml

from nexus.domain.json_types import JsonObject

DEFAULT_URL = "http://127.0.0.1:8080"
# `make run` keeps its generated admin key here, relative to the checkout.
MAKE_RUN_KEY_FILE = Path(".nexus/admin.key")


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str | None
    context: str | None = None
    key_source: str = "none"  # where the key came from, for `config view` (never the key itself)

    def __repr__(self) -> str:  # a stray print of the target never shows the key
        return f"Target(url={self.url!r}, context={self.context!r}, key_source={self.key_source!r})"


def config_path(env: Mapping[str, str]) -> Path:
    if explicit := env.get("NEXUSCTL_CONFIG"):
        return Path(explicit).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]).expanduser() if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "nexus" / "nexusctl.yaml"


def load_file(path: Path) -> JsonObject:
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping with 'contexts'")
    return doc


def contexts_of(doc: JsonObject) -> dict[str, JsonObject]:
    raw = doc.get("contexts") or []
    if isinstance(raw, dict):  # also accept `contexts: {name: {...}}`
        return {str(k): dict(v or {}) for k, v in raw.items()}
    out = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not item.get("name"):
            raise ConfigError(f"contexts[{i}]: each context needs a name")
        # kubeconfig nests the fields under `context:`; a flat entry works too.
        out[str(item["name"])] = dict(item.get("context") or {k: v for k, v in item.items() if k != "name"})
    return out


def _key_from_file(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = base / p
    try:
        return p.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {p}: {exc.strerror}") from None


def resolve(
    env: Mapping[str, str], *, url: str | None = None, api_key: str | None = None, context: str | None = None
) -> Target:
    path = config_path(env)
    doc = load_file(path)
    contexts = contexts_of(doc)
    name = context or doc.get("current-context")
    ctx: JsonObject = {}
    if context and context not in contexts:
        raise ConfigError(f"no context named {context!r} in {path} (known: {', '.join(contexts) or 'none'})")
    if name and name in contexts:
        ctx = contexts[name]
    explicit_ctx = context is not None

    def pick_url() -> str:
        if url:
            return url
        if explicit_ctx and ctx.get("url"):
            return cast(str, ctx["url"])  # a context's url is a string (contexts are written by `config`)
        return env.get("NEXUS_URL") or ctx.get("url") or DEFAULT_URL

    def pick_key() -> tuple[str | None, str]:
        if api_key:
            return api_key, "flag --api-key"
        from_ctx = None
        if ctx.get("api_key"):
            from_ctx = (str(ctx["api_key"]), f"context {name!r}")
        elif ctx.get("api_key_file"):
            from_ctx = (_key_from_file(str(ctx["api_key_file"]), path.parent), f"context {name!r} (file)")
        if explicit_ctx and from_ctx:
            return from_ctx
        if env.get("NEXUS_API_KEY"):
            return env["NEXUS_API_KEY"], "NEXUS_API_KEY"
        if from_ctx:
            return from_ctx
        if MAKE_RUN_KEY_FILE.exists():
            return MAKE_RUN_KEY_FILE.read_text().strip(), str(MAKE_RUN_KEY_FILE)
        return None, "none"

    key, source = pick_key()
    return Target(
        url=pick_url().rstrip("/"), api_key=key or None, context=name if name in contexts else None, key_source=source
    )


def use_context(env: Mapping[str, str], name: str) -> Path:
    path = config_path(env)
    doc = load_file(path)
    if name not in contexts_of(doc):
        raise ConfigError(f"no context named {name!r} in {path}")
    doc["current-context"] = name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
