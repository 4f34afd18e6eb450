"""Progress bars (tqdm) that can be switched off."""

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def progress_bar(
    items: Iterable[T], desc: str = "", enabled: bool = True, total: int | None = None, **kw: Any
) -> Iterator[T]:
    """Iterate ``items`` with a tqdm bar when ``enabled`` (and tqdm is importable)."""
    if not enabled:
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True, **kw)
