"""The internal board as a provider: no external calls. The internal board is core-api's own, so
this provider only keeps what it was told, for the contract and for `board_links`."""

from nexus.board_sync.providers.base import MARKER_SOURCE, Card, Comment, ExternalItem, Fields, NotFound, group_of


class InternalProvider:
    name = "internal"

    def __init__(self) -> None:
        self.items: dict[str, ExternalItem] = {}
        self.comments: dict[str, list[Comment]] = {}

    async def create_item(self, card: Card) -> ExternalItem:
        item = ExternalItem(
            id=f"{MARKER_SOURCE}-{card.task_id}",
            external_id=card.task_id,
            title=card.title,
            description=card.description,
            group=group_of(card.status),
            assignee=card.assignee,
            labels=list(card.labels),
        )
        self.items[item.id] = item
        return item

    async def find_by_external_id(self, task_id: str) -> ExternalItem | None:
        return self.items.get(f"{MARKER_SOURCE}-{task_id}")

    async def get_item(self, item_id: str) -> ExternalItem:
        if item_id not in self.items:
            raise NotFound(f"no item {item_id}")
        return self.items[item_id]

    async def update_status(self, item_id: str, group: str) -> None:
        (await self.get_item(item_id)).group = group

    async def update_fields(self, item_id: str, fields: Fields) -> None:
        item = await self.get_item(item_id)
        if fields.title is not None:
            item.title = fields.title
        if fields.description is not None:
            item.description = fields.description
        if fields.assignee is not None:
            item.assignee = fields.assignee
        if fields.labels is not None:
            item.labels = list(fields.labels)

    async def add_comment(self, item_id: str, text: str) -> Comment:
        await self.get_item(item_id)
        comments = self.comments.setdefault(item_id, [])
        comments.append(Comment(id=str(len(comments) + 1), text=text))
        return comments[-1]

    async def link(self, item_id: str, title: str, url: str) -> None:
        await self.add_comment(item_id, f"{title}: {url}")

    async def list_comments(self, item_id: str) -> list[Comment]:
        await self.get_item(item_id)
        return list(self.comments.get(item_id, []))

    async def aclose(self) -> None:
        return None
