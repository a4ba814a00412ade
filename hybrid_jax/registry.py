"""Members by name: data formats, evaluation dataset types and model families.

A module adds a member with a decorator and the code that needs one looks it up by the name a
config gives:

    SCHEDULES = Registry("optim.schedule")

    @SCHEDULES.register("linear", "linear_decay")
    def linear(config): ...

    SCHEDULES.get(config.optim.schedule)  # an unknown name: one InputError listing the known ones

So a new data source, dataset type or model family is one new module plus a test, not an edit of
closed lists in the modules that use them.
"""
from __future__ import annotations

from typing import Any, Callable

from hybrid_jax.errors import InputError


class Registry:
    """Named members of one kind; `key` is the config key whose value names a member."""

    def __init__(self, key: str):
        self.key = key
        self._members: dict[str, Any] = {}

    def register(self, name: str, *aliases: str) -> Callable[[Any], Any]:
        """Decorator: the member answers to `name` and each alias (e.g. 'xquad-r', 'xquad_r')."""
        def add(member):
            for n in (name, *aliases):
                if n in self._members:
                    raise ValueError(f"{self.key}: {n!r} is registered twice")
                self._members[n] = member
            return member
        return add

    def unregister(self, name: str) -> None:
        """Drop a member (and its aliases): for tests that register a temporary one."""
        member = self._members[name]
        for n in [n for n, m in self._members.items() if m is member]:
            del self._members[n]

    def names(self) -> tuple[str, ...]:
        return tuple(self._members)

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def get(self, name: str, where: str = "", hint: str = "") -> Any:
        """The member called `name`; else one InputError "<where> 'name' is not one of <names>",
        `where` defaulting to "<key>:"."""
        if name not in self._members:
            known = ", ".join(self._members)
            raise InputError(f"{where or self.key + ':'} {name!r} is not one of {known}"
                             + (f" ({hint})" if hint else ""))
        return self._members[name]
