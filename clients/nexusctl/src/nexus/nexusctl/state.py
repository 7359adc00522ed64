"""What every command shares: the resolved target, one HTTP client, and how failures are printed."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn, cast

import typer

from nexus.nexusctl.client import ApiError, BadValue, Client
from nexus.nexusctl.config import ConfigError, Target, resolve
from nexus.nexusctl.kinds import UnknownKind
from nexus.nexusctl.manifests import ManifestError


@dataclass
class State:
    env: Mapping[str, str]
    url: str | None = None
    api_key: str | None = None
    context: str | None = None
    _client: Client | None = field(default=None, repr=False)

    def target(self) -> Target:
        return resolve(self.env, url=self.url, api_key=self.api_key, context=self.context)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.target())
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def state(ctx: typer.Context) -> State:
    return cast(State, ctx.find_root().obj)  # main puts the State on the root context


def out(text: str) -> None:
    typer.echo(text)


def err(text: str) -> None:
    typer.echo(text, err=True)


def fail(text: str, code: int = 1) -> NoReturn:
    err(f"error: {text}")
    raise typer.Exit(code)


def api_failure(exc: ApiError, prefix: str = "") -> list[str]:
    lines = exc.lines(prefix)
    if exc.status == 401:
        lines.append("  (set NEXUS_API_KEY, pass --api-key, or use a context with api_key_file)")
    return lines


@contextmanager
def handled() -> Iterator[None]:
    """Turn the errors a user can act on into one clear message and exit 1 (never a traceback)."""
    try:
        yield
    except ApiError as exc:
        lines = api_failure(exc)
        err("error: " + lines[0])
        for line in lines[1:]:
            err(line)
        raise typer.Exit(1) from None
    except (ConfigError, UnknownKind, ManifestError, BadValue) as exc:
        fail(str(exc))
