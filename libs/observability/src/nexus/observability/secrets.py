"""Secret values by name: files in the secrets directory, or NEXUS_SECRET_<NAME> variables of the
process. Values go only where they are used (a run's environment, a provider call), never into events or logs."""

import re
from collections.abc import Mapping
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,63}$")


class SecretStore:
    def __init__(self, directory: Path, environ: Mapping[str, str]) -> None:
        self.directory = directory
        self.environ = environ

    def get(self, name: str) -> str | None:
        if not _NAME.match(name):
            return None
        path = self.directory / name
        if path.is_file():
            return path.read_text().rstrip("\n")
        return self.environ.get("NEXUS_SECRET_" + env_name(name))

    def resolve(self, names: list[str]) -> dict[str, str]:
        """NEXUS_SECRET_<NAME> → value for each known name; unknown names are left out (the
        hypervisor refuses a reference to a secret it does not have)."""
        out = {}
        for name in names:
            value = self.get(name)
            if value is not None:
                out["NEXUS_SECRET_" + env_name(name)] = value
        return out


def env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()
