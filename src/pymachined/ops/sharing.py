"""Which machine uses which shared resource, and when the last user of one goes.

Caches keyed by a namespace or a tree (a network namespace's netlink sockets, a root's os-release
entry) are shared by the machines that see the same one; each machine uses one key at a time. The
resource of a key must go when no machine uses it any more, or it pins the namespace it belongs to.
"""

from __future__ import annotations

from collections import Counter
from typing import Generic, TypeVar

K = TypeVar("K")


class Sharing(Generic[K]):
    """Machine name → the key it uses, with a count of users per key."""

    def __init__(self) -> None:
        self._keys: dict[str, K] = {}
        self._users: Counter[K] = Counter()

    def use(self, name: str, key: K) -> K | None:
        """Machine `name` now uses `key`; the key it used before, if that has no user left."""
        old = self._keys.get(name)
        if old == key:
            return None
        self._keys[name] = key
        self._users[key] += 1
        return self._drop(old)

    def release(self, name: str) -> K | None:
        """Machine `name` went; its key, if that has no user left."""
        return self._drop(self._keys.pop(name, None))

    def clear(self) -> None:
        self._keys.clear()
        self._users.clear()

    def _drop(self, key: K | None) -> K | None:
        if key is None:
            return None
        self._users[key] -= 1
        if self._users[key] > 0:
            return None
        del self._users[key]
        return key
