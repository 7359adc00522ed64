from litestar import get
from litestar.exceptions import HTTPException

from nexus.core_api.auth.requests import OpenRequest
from nexus.core_api.context import Context
from nexus.db.connection import ping
from nexus.events.consumer import LOOPS


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", include_in_schema=False)
async def readyz(request: OpenRequest) -> dict[str, str]:
    ctx: Context | None = getattr(request.app.state, "ctx", None)
    if ctx is None or not ctx.nc.is_connected:
        raise HTTPException(status_code=503, detail="NATS not connected")
    try:
        await ping(request.app.state.db)
    except Exception as exc:
        raise HTTPException(status_code=503, detail="database unreachable") from exc
    if not LOOPS.healthy():
        raise HTTPException(status_code=503, detail=f"consumer loops down: {', '.join(sorted(LOOPS.down))}")
    return {"status": "ready"}
