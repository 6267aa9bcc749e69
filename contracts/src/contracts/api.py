"""What every service's HTTP API shares: how a list is paged, and the errors it answers.

A list route takes a `Page` as its query (`?limit=&after=`) and answers at most `limit`
items; the client asks for the next page with `after` set to the id of the last item it
got. A page shorter than `limit` is the last. Paging by the last item, not by an offset,
never repeats nor skips an item when others are added meanwhile.
"""

from typing import Any
from uuid import UUID

from pydantic import Field

from .common import WireModel

PAGE_SIZE = 100
"""Items in a page when the client does not say."""
MAX_PAGE_SIZE = 1000
"""The most items one page, or one request about many items, may hold."""


class Page(WireModel):
    """Which page of a list: at most `limit` items, from the one after `after`."""

    limit: int = Field(
        PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="The most items to answer with."
    )
    after: UUID | None = Field(
        None,
        description="The id of the last item of the previous page: the page goes on after it. "
        "Unset: the first page.",
    )

    def unknown_cursor(self) -> list[dict[str, Any]]:
        """The 422 detail for an `after` that is no item's id, shaped as a validation error."""
        return [
            {
                "loc": ["query", "after"],
                "msg": f"{self.after} is the id of no item of this list",
                "type": "unknown_cursor",
            }
        ]


class ErrorMessage(WireModel):
    """The body of an error answer other than 422: what is wrong, for people."""

    detail: str


UNREADABLE_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorMessage, "description": "The body is not UTF-8, so not JSON"}
}
"""For the `responses` of a route that reads a JSON body: FastAPI answers 400 to a body it
cannot decode, but documents only the 422 for one it cannot validate."""
