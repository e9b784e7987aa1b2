"""Disable with cancel: the ownership ends with the disable, so the owner's run in
progress can no longer commit, whether or not its worker has noticed."""

from __future__ import annotations

import pytest

from tenure.errors import TaskNotFound
from tenure.models import Freed
from tenure.store import Store

from .dialect import RawDB
from .helpers import add, assert_commit_refused, owned, task_of


async def test_disable_with_cancel_frees_the_task_and_refuses_the_old_terms_commit(store: Store, probe: RawDB) -> None:
    claim = await owned(store)
    changes = (await store.cluster_view()).changes
    task = await store.set_enabled("dispatch", "barcelona", False, cancel=True)
    assert (task.enabled, task.owner, task.term) == (False, None, claim.term)
    assert task.freed_how is Freed.RELEASED  # a re-enabled task is claimed without takeover delay
    assert task.version > claim.task.version
    assert (await store.cluster_view()).changes > changes
    assert await store.owned_tasks("w1") == []
    await assert_commit_refused(store, probe, claim.term)
    # Enabled again, it is claimed at a new term.
    await store.set_enabled("dispatch", "barcelona", True)
    (again,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    assert again.term > claim.term


async def test_disable_with_cancel_of_an_unowned_task_only_disables_it(store: Store) -> None:
    await add(store, "dispatch", "lisbon")
    before = await task_of(store, "dispatch", "lisbon")
    task = await store.set_enabled("dispatch", "lisbon", False, cancel=True)
    assert (task.enabled, task.owner, task.term, task.freed_how) == (False, None, 0, before.freed_how)
    with pytest.raises(TaskNotFound):
        await store.set_enabled("dispatch", "madrid", False, cancel=True)
