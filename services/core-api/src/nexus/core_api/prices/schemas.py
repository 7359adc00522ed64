from typing import Annotated

import msgspec

from nexus.core_api.schemas import Body, Out

UsdPerMTok = Annotated[float, msgspec.Meta(ge=0, le=100_000, description="USD per 1M tokens")]
ModelName = Annotated[
    str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._:-]{0,119}$", description="model name or prefix, lower case")
]


class PriceIn(Body):
    input_per_mtok: UsdPerMTok
    output_per_mtok: UsdPerMTok


class PriceOut(Out):
    model: str
    input_per_mtok: float
    output_per_mtok: float
    updated_by: str
    updated_at: str | None
