"""core-api's entry point: granian serving the litestar app (its lifespan wires everything else)."""

import os

from granian import Granian
from granian.constants import Interfaces

from nexus.core_api.settings import CoreSettings
from nexus.domain.settings import load_settings
from nexus.observability.service import bootstrap


def main() -> None:
    settings = load_settings(CoreSettings, os.environ)
    bootstrap("core-api", settings)
    Granian(
        "nexus.core_api.app:create_app_from_env",
        factory=True,
        interface=Interfaces.ASGI,
        address=settings.http_host,
        port=settings.http_port,
        workers=1,
        log_enabled=True,
    ).serve()


if __name__ == "__main__":
    main()
