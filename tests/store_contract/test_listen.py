"""listen(): wake idle workers on changes, or return at once where the database cannot notify."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from tenure.models import SlotDone
from tenure.store import Store

from .helpers import add, register


async def test_listen_wakes_on_every_change_or_returns_at_once(store: Store) -> None:
    woken = asyncio.Event()

    def wake() -> None:
        woken.set()

    listener = asyncio.create_task(store.listen(wake))
    first_wake = asyncio.create_task(woken.wait())
    try:
        done, _ = await asyncio.wait({listener, first_wake}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert done, "listen() neither returned nor started listening"
        # The capability flag says which: a store that cannot notify returns at once.
        assert (listener in done) is not store.supports_listen
        if listener in done:
            assert listener.result() is None  # workers poll
            return

        await register(store, "w1")
        await add(store, "dispatch", "b")

        async def release() -> None:
            (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
            slot = SlotDone(kind="dispatch", key=claim.task.key, term=claim.term, slot=1.0)
            assert await store.release_tasks("w1", [slot]) == 1

        async def leave() -> None:
            assert len(await store.claim_tasks("w1", kinds=["dispatch"], limit=10)) == 2
            assert await store.leave("w1", []) == 2

        changes: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("add_task", lambda: add(store, "dispatch", "a")),
            ("disable", lambda: store.set_enabled("dispatch", "a", False)),
            ("enable", lambda: store.set_enabled("dispatch", "a", True)),
            ("trigger", lambda: store.trigger("dispatch", "a")),
            ("release_tasks", release),
            ("leave", leave),
            ("remove_task", lambda: store.remove_task("dispatch", "a")),
            # Issue 18: workers stop starting a paused kind at once where the store notifies.
            ("set_pause", lambda: store.set_pause("dispatch", by="test", cancel=False)),
            ("clear_pause", lambda: store.clear_pause("dispatch")),
            ("set_pause of every kind", lambda: store.set_pause(None, by="test", cancel=True)),
            ("clear_pause of every kind", lambda: store.clear_pause(None)),
        ]
        for name, change in changes:
            woken.clear()
            await change()
            try:
                await asyncio.wait_for(woken.wait(), 5)
            except TimeoutError:
                raise AssertionError(f"{name} did not wake the listener") from None
    finally:
        for task in (listener, first_wake):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
