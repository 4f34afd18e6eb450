"""A small name -> object registry that refuses duplicates and lists valid names."""

from collections.abc import Iterator
from typing import Generic, TypeVar

from steerlab.errors import RegistryError, unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (methods, judges, behaviors...).

    ``register`` refuses a name that is already taken; ``get`` raises an
    :class:`~steerlab.errors.UnknownNameError` listing the valid names.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise RegistryError(
                f"A {self.kind} named {name!r} is already registered; pick another name."
            )
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._items) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
