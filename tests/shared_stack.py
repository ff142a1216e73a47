"""One seeded stack for a whole test module, for tests that do not need a fresh one each (the stack
fixture is per test): `stack = module_stack("name")` at a module's top level."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from fixtures.apps.seeding import seed_stack
from fixtures.stack.local import LocalStack


def module_stack(name: str, prepare: Callable[[LocalStack], None] | None = None) -> object:
    """A module-scoped `stack` fixture: up, seeded at the session's scale, `prepare`d, down at the end."""

    @pytest.fixture(scope="module")
    def stack(stack_settings, drill_scale) -> Iterator[LocalStack]:
        made = LocalStack(stack_settings, name)
        made.up()
        try:
            seed_stack(made, drill_scale)
            if prepare is not None:
                prepare(made)
            yield made
        finally:
            made.down(failed=False)

    return stack
