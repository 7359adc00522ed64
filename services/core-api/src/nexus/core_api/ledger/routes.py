from litestar import get
from litestar.params import FromPath

from nexus.core_api.auth.guards import READ
from nexus.core_api.errors import not_found
from nexus.core_api.ledger.verify import LedgerVerdict, verify_run
from nexus.db.documents import Run


@get("/v1/runs/{run_id:str}/verify", guards=[READ], tags=["runs"])
async def verify_run_ledger(run_id: FromPath[str]) -> LedgerVerdict:
    """Check the run's ledger against the hashes core-api recorded as each entry arrived: a truncated,
    re-sealed or edited ledger, or a forged final hash, is reported with where it breaks."""
    run = await Run.get(run_id)
    if run is None:
        raise not_found("run", run_id)
    return await verify_run(run)
