"""Fixtures of the domain's unit tests: a FrozenClock, a real signer, a wired World."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.core.memory_store import FakeSigner
from tests.core.world import World
from tokend.core.clock import FrozenClock


@pytest.fixture(scope="session")
def signer() -> FakeSigner:
    return FakeSigner()  # one RSA key for the session: generating one costs ~0.1 s


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def make_world(signer: FakeSigner, clock: FrozenClock) -> Callable[..., World]:
    """A World with Policy fields overridden, e.g. ``make_world(refresh_reuse_grace=0)``."""

    def make(**policy: Any) -> World:
        return World(signer, clock, **policy)

    return make


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()
