"""The model price list: everyone reads it, admins change it (audited). A run is priced when dispatched."""

from litestar import Controller, delete, get, put
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_AGENTS, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.errors import DomainError
from nexus.core_api.prices import service
from nexus.core_api.prices.schemas import ModelName, PriceIn, PriceOut
from nexus.db.documents import ModelPrice

import msgspec


def _model(name: str) -> str:
    try:
        return msgspec.convert(name, ModelName)
    except msgspec.ValidationError as exc:
        raise DomainError(422, f"model: {exc}", field="model") from None


class PriceController(Controller):
    path = "/v1/prices"
    tags = ["prices"]

    @get("/", guards=[READ])
    async def list_prices(self) -> list[PriceOut]:
        return [service.to_out(p) for p in await ModelPrice.find({}).sort("+_id").to_list()]

    @get("/{model:str}", guards=[READ])
    async def get_price(self, model: FromPath[str]) -> PriceOut:
        return service.to_out(await service.get(_model(model)))

    @put("/{model:str}", guards=[MANAGE_AGENTS])
    async def put_price(self, request: ApiRequest, model: FromPath[str], data: JSONBody[PriceIn]) -> PriceOut:
        name = _model(model)
        doc = await service.put(name, data.input_per_mtok, data.output_per_mtok, by=request.user.key_id)
        await record(request.user, "price.update", f"prices/{name}", after_id=name)
        return service.to_out(doc)

    @delete("/{model:str}", guards=[MANAGE_AGENTS], status_code=HTTP_204_NO_CONTENT)
    async def delete_price(self, request: ApiRequest, model: FromPath[str]) -> None:
        name = _model(model)
        await service.delete(name)
        await record(request.user, "price.delete", f"prices/{name}", before_id=name)
