"""Fencing across real OS processes sharing one SQLite store file.

Every test drives child processes (``fence_child.py``) that use the store API directly:
register, renew, claim, release, and fenced transactions that write rows into a
``decisions(task, term, writer, n)`` table. The table is the evidence: a refused
transaction must leave nothing in it, an accepted one exactly its rows.

On SQLite a fenced transaction holds the database's single write lock from its
ownership check to its commit, so no takeover can happen while one is open: a stale
writer is refused either at the start (someone took over, or its lease ran out, before
it began) or at the end (its lease ran out while it was open, and nobody could take
over meanwhile). The tests check both, and that the lock, not luck, orders a takeover
after an open transaction.

Waits are on conditions with deadlines (a child's answer, the database clock passing a
lease's expiry), never bare sleeps.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from .harness import JSON, KIND, REPLY_TIMEOUT, Child, Cluster, wait_for

pytestmark = pytest.mark.slow

KEY = "barcelona"
#: How long a child must stay blocked to show that its command waits on a lock.
BLOCKED = 0.4
#: A lease that outlives any test.
LONG = 30.0
#: A lease cut short with ``renew`` once a test wants it gone: the state is the same as a
#: lease that was not renewed, and the test does not wait for a long one to run out.
SHORT = 0.2


def fence(term: int, n: int, key: str = KEY, **extra: Any) -> JSON:
    """Arguments of a fenced ``write``/``open`` command."""
    return {"kind": KIND, "key": key, "term": term, "n": n, **extra}


def refused(reply: JSON, stage: str) -> None:
    """Assert that a fenced transaction was refused with LeaseLost at ``stage``."""
    assert reply.get("ok") is False, f"a stale fenced commit was accepted: {reply}"
    assert reply["error"] == "LeaseLost", reply
    assert reply["stage"] == stage, reply


async def claim_one(child: Child, key: str = KEY) -> int:
    """Have ``child`` claim, expecting exactly the task ``key``; return its term."""
    reply = await child.ok("claim", kinds=[KIND], limit=1)
    assert [c[:2] for c in reply["claims"]] == [[KIND, key]], reply
    term = reply["claims"][0][2]
    assert isinstance(term, int)
    return term


async def let_lease_run_out(cluster: Cluster, child: Child) -> None:
    """Stop vouching for ``child``'s lease: cut it to SHORT and wait until it has run out."""
    await child.ok("renew", ttl=SHORT)
    await cluster.wait_expired(child.name)


async def assert_owner(cluster: Cluster, owner: str | None, term: int, key: str = KEY) -> None:
    task = await cluster.store.get_task(KIND, key)
    assert task is not None
    assert (task.owner, task.term) == (owner, term)


# -- a) ---------------------------------------------------------------------------------


async def test_commit_after_takeover_is_refused(cluster: Cluster) -> None:
    """A fenced commit from a process whose task another process took over is refused
    with LeaseLost and writes nothing, whether the loser's lease expired or is live."""
    a, b = await cluster.spawn("a", "b")
    await cluster.add_task(KEY)
    await a.ok("register", ttl=LONG)
    await b.ok("register", ttl=LONG)
    ta = await claim_one(a)
    await a.ok("write", **fence(ta, 1))
    assert (await b.ok("claim", kinds=[KIND], limit=1))["claims"] == [], "took a live worker's task"

    # a's lease runs out; b takes over at a new term; a's late commit is refused.
    await let_lease_run_out(cluster, a)
    tb = await claim_one(b)
    assert tb > ta
    refused(await a.call("write", **fence(ta, 2, rows=3)), "begin")
    await b.ok("write", **fence(tb, 3))

    # a comes back under the same id with a live lease: its old term stays dead.
    await a.ok("register", ttl=LONG)
    refused(await a.call("write", **fence(ta, 4)), "begin")

    # The other way round, both leases live: b lets go, a takes over, b is refused.
    await b.ok("release")
    tc = await claim_one(a)
    assert tc > tb
    refused(await b.call("write", **fence(tb, 5, rows=2)), "begin")
    await a.ok("write", **fence(tc, 6))

    assert cluster.decisions() == [(KEY, ta, "a", 1), (KEY, tb, "b", 3), (KEY, tc, "a", 6)]
    await assert_owner(cluster, "a", tc)


# -- b) ---------------------------------------------------------------------------------


async def test_commit_after_lease_expired_without_takeover_is_refused(cluster: Cluster) -> None:
    """A holder whose lease ran out, with nobody taking over, cannot commit: neither a
    transaction still open when the lease ran out (refused at commit, its rows and its
    slot rolled back) nor one begun after. The lease is not revived by renewing."""
    (a,) = await cluster.spawn("a")
    await cluster.add_task(KEY)
    await a.ok("register", ttl=LONG)
    ta = await claim_one(a)
    await a.ok("write", **fence(ta, 1, slot=1000.0))

    # Opened while the lease is live; the lease runs out before the commit.
    await a.ok("renew", ttl=1.0)  # the last renewal: the lease ends a second from now
    assert (await a.call("open", **fence(ta, 2, slot=2000.0))).get("in_tx") is True
    await cluster.wait_expired("a")
    await a.send("commit")
    refused(await a.recv(), "commit")

    # Begun after the lease ran out.
    refused(await a.call("write", **fence(ta, 3, rows=3, slot=3000.0)), "begin")

    # Nobody took over: the task is still a's at the same term, so the lease alone refused.
    await assert_owner(cluster, "a", ta)
    task = await cluster.store.get_task(KIND, KEY)
    assert task is not None
    assert task.last_slot == 1000.0, "a refused commit advanced the slot"
    assert cluster.decisions() == [(KEY, ta, "a", 1)]

    renewal = await a.call("renew", ttl=LONG)
    assert renewal.get("ok") is False, "an expired lease was revived"
    assert renewal["error"] == "LeaseLost", renewal
    refused(await a.call("write", **fence(ta, 4)), "begin")
    assert cluster.decisions() == [(KEY, ta, "a", 1)]


# -- c) ---------------------------------------------------------------------------------


async def test_terms_only_grow_across_owner_changes(cluster: Cluster) -> None:
    """Across many changes of owner between three processes, by every route a task can
    change hands (release, expiry, a killed process, a worker coming back under its id,
    a graceful leave, the task removed and added again), every new term is greater than
    all before it, and every earlier (worker, term) is refused from then on."""
    names = ["a", "b", "c"]
    procs = dict(zip(names, await cluster.spawn(*names), strict=True))
    await cluster.add_task(KEY)
    history: list[tuple[str, int]] = []  # (owner, term), in the order ownership changed
    accepted: list[tuple[str, int, str, int]] = []

    async def make_live(name: str) -> None:
        reply = await procs[name].call("renew", ttl=LONG)
        if reply.get("ok") is not True:  # its lease ran out, or it left: join again
            assert reply["error"] == "LeaseLost", reply
            await procs[name].ok("register", ttl=LONG)

    async def take(name: str, n: int) -> None:
        await make_live(name)
        term = await claim_one(procs[name])
        assert all(term > old for _, old in history), f"term {term} after {history}"
        await assert_owner(cluster, name, term)
        await procs[name].ok("write", **fence(term, n))
        accepted.append((KEY, term, name, n))
        for old_name, old_term in history:
            refused(await procs[old_name].call("write", **fence(old_term, -n)), "begin")
        history.append((name, term))

    await take("a", 0)
    changes = ["release", "expire", "remove_readd", "comeback", "kill", "leave"] * 2
    for n, how in enumerate(changes, start=1):
        holder = history[-1][0]
        successor = names[(names.index(holder) + 1) % len(names)]
        if how == "release":
            await procs[holder].ok("release")
        elif how == "expire":
            await let_lease_run_out(cluster, procs[holder])
        elif how == "remove_readd":
            await cluster.store.remove_task(KIND, KEY)
            await cluster.add_task(KEY)
            await assert_owner(cluster, None, 0)  # a new row: never owned, no term handed out yet
        elif how == "comeback":  # the holder's lease runs out and the same worker id registers again
            await let_lease_run_out(cluster, procs[holder])
            await procs[holder].ok("register", ttl=LONG)
            successor = holder
        elif how == "kill":
            await procs[holder].ok("renew", ttl=SHORT)  # its last renewal
            procs[holder].kill()
            await procs[holder].wait()
            await cluster.wait_expired(holder)
            (procs[holder],) = await cluster.spawn(holder)
        elif how == "leave":
            await procs[holder].ok("leave")
        await take(successor, n)

    terms = [t for _, t in history]
    assert terms == sorted(set(terms)), terms
    assert cluster.decisions() == accepted
    assert cluster.term_counter() == terms[-1], "the term counter does not match the last term"


# -- d) ---------------------------------------------------------------------------------


async def test_racing_claims_have_one_winner_per_term(cluster: Cluster) -> None:
    """Six processes race to claim the same sixteen tasks, round after round, and then
    race to take over the tasks of one they killed: every claim gets a term nobody else
    ever got, each task goes to exactly one process per round, and each winner's fenced
    commit at its term is accepted."""
    racers = await cluster.spawn(*[f"w{i}" for i in range(6)])
    keys = [f"city-{i:02d}" for i in range(16)]
    for key in keys:
        await cluster.add_task(key)
    for r in racers:
        await r.ok("register", ttl=LONG)
    claims: list[tuple[str, int, str]] = []  # (key, term, winner), all rounds

    async def race(children: list[Child], n: int) -> dict[str, list[tuple[str, int]]]:
        """All children claim at once, as much as they can; each then commits at its terms."""
        for c in children:
            await c.send("claim_all", kinds=[KIND], limit=1, barrier=True)
        for c in children:
            assert (await c.recv()).get("armed") is True
        for c in children:  # every child is waiting for this line: they start together
            await c.send("go")
        won = {c.name: [(k, t) for _, k, t in (await c.recv())["claims"]] for c in children}
        for c in children:
            reply = await c.ok("write_held", n=n)
            assert reply["refused"] == [], f"{c.name} lost a task it had just won: {reply}"
        for name, got in won.items():
            claims.extend((k, t, name) for k, t in got)
        return won

    rounds = 4
    for n in range(rounds):
        won = await race(racers, n)
        winners = Counter(k for got in won.values() for k, _ in got)
        assert winners == Counter(keys), f"round {n}: tasks not won exactly once: {won}"
        if n < rounds - 1:
            for r in racers:
                await r.ok("release")

    # The process holding the most tasks dies; once its lease runs out the rest race for them.
    victim = max(racers, key=lambda r: len(won[r.name]))
    dead = {k: t for k, t in won[victim.name]}
    assert dead
    await victim.ok("renew", ttl=SHORT)  # its last renewal
    victim.kill()
    await victim.wait()
    await cluster.wait_expired(victim.name)
    survivors = [r for r in racers if r is not victim]
    taken = await race(survivors, rounds)
    retaken = Counter(k for got in taken.values() for k, _ in got)
    assert retaken == Counter(dead.keys()), f"the dead worker's tasks were not each taken over once: {taken}"
    assert all(t > dead[k] for got in taken.values() for k, t in got)

    assert len({w for _, _, w in claims}) > 1, "no race happened: one process won every task"
    terms = [t for _, t, _ in claims]
    assert len(set(terms)) == len(terms), "a term was handed out twice"
    assert cluster.term_counter() == len(claims) == max(terms)
    for key in keys:
        key_terms = [t for k, t, _ in claims if k == key]
        assert key_terms == sorted(key_terms), f"{key}: terms went back: {key_terms}"
    winner = {(k, t): w for k, t, w in claims}
    rows = cluster.decisions()
    assert {(k, t) for k, t, _, _ in rows} == set(winner), "a claimed term committed nothing, or vice versa"
    for k, t, w, _ in rows:
        assert winner[(k, t)] == w, f"{w} committed {k} at term {t}, won by {winner[(k, t)]}"
    assert Counter((k, t, n) for k, t, _, n in rows).most_common(1)[0][1] == 1


# -- e) ---------------------------------------------------------------------------------


async def test_takeover_waits_for_an_open_fenced_transaction_that_commits(cluster: Cluster) -> None:
    """While A's fenced transaction is open, B's claim waits; A commits (its check held
    to the end), and only then does B's claim finish. When B later takes over, at a
    greater term, A's commits are refused and A's committed row stays."""
    a, b = await cluster.spawn("a", "b")
    await cluster.add_task(KEY)
    await a.ok("register", ttl=LONG)
    await b.ok("register", ttl=LONG)
    ta = await claim_one(a)

    assert (await a.call("open", **fence(ta, 1))).get("in_tx") is True
    await b.send("claim", kinds=[KIND], limit=1, ack=True)
    assert (await b.recv()).get("started") is True
    await b.expect_silent(BLOCKED)  # B's claim cannot run while A's transaction is open
    await a.send("commit")
    committed = await a.recv()
    assert committed.get("ok") is True, committed
    late_claim = await b.recv()
    assert late_claim["claims"] == [], "B took a task whose owner was live"
    assert late_claim["t_start"] < committed["t_commit"] < late_claim["t_end"]
    assert cluster.decisions() == [(KEY, ta, "a", 1)]

    await let_lease_run_out(cluster, a)
    tb = await claim_one(b)
    assert tb > ta
    refused(await a.call("write", **fence(ta, 2)), "begin")
    refused(await a.call("open", **fence(ta, 3)), "begin")
    await b.ok("write", **fence(tb, 4))
    assert cluster.decisions() == [(KEY, ta, "a", 1), (KEY, tb, "b", 4)]


async def test_takeover_of_expired_lease_waits_for_open_fenced_transaction(cluster: Cluster) -> None:
    """A's lease runs out while its fenced transaction is open. B's claim, which would
    win the task at once, cannot complete until A's transaction ends; A's commit is
    refused and rolled back; B then owns the task at a greater term."""
    a, b = await cluster.spawn("a", "b")
    await cluster.add_task(KEY)
    await a.ok("register", ttl=LONG)
    await b.ok("register", ttl=LONG)
    ta = await claim_one(a)
    await a.ok("renew", ttl=1.0)  # the last renewal: the lease ends a second from now

    assert (await a.call("open", **fence(ta, 1))).get("in_tx") is True
    await cluster.wait_expired("a")
    await b.send("claim", kinds=[KIND], limit=1, ack=True)
    assert (await b.recv()).get("started") is True
    await b.expect_silent(BLOCKED)
    await a.send("commit")
    late = await a.recv()
    refused(late, "commit")
    takeover = await b.recv()
    assert takeover.get("ok") is True, takeover
    assert takeover["t_start"] < late["t_commit"] < takeover["t_end"]
    [[_, _, tb]] = takeover["claims"]
    assert tb > ta
    assert cluster.decisions() == []

    refused(await a.call("write", **fence(ta, 2)), "begin")
    await b.ok("write", **fence(tb, 3))
    assert cluster.decisions() == [(KEY, tb, "b", 3)]
    await assert_owner(cluster, "b", tb)


# -- f) ---------------------------------------------------------------------------------


async def test_paused_worker_late_commit_is_refused(cluster: Cluster) -> None:
    """A keeps its lease with a heartbeat, is frozen with SIGSTOP past its lease, and B
    takes over and commits meanwhile. After SIGCONT, A's late commit is refused and
    writes nothing, A's heartbeat finds its lease lost (not revived), and B's commits at
    the newer term keep being accepted."""
    a, b = await cluster.spawn("a", "b")
    await cluster.add_task(KEY)
    first = await a.ok("register", ttl=1.0)
    await a.ok("heartbeat", ttl=1.0, every=0.1)
    await b.ok("register", ttl=LONG)
    ta = await claim_one(a)
    await a.ok("write", **fence(ta, 1))

    # The heartbeat, not the first lease, keeps a live: past the first expiry b gets nothing.
    async def past_first_expiry() -> bool:
        return await cluster.store.now() > float(first["expires_at"]) + 0.1

    await wait_for(past_first_expiry, "the first lease to have run out", within=REPLY_TIMEOUT)
    assert (await b.ok("claim", kinds=[KIND], limit=1))["claims"] == []

    await cluster.pause_outside_write(a)
    await cluster.wait_expired("a")
    tb = await claim_one(b)
    assert tb > ta
    await b.ok("write", **fence(tb, 2))

    await a.send("write", **fence(ta, 3, rows=3))  # A's next step, queued while it is frozen
    a.resume()
    refused(await a.recv(), "begin")
    await b.ok("write", **fence(tb, 4))

    async def heartbeat_lost() -> bool:
        status = await a.ok("status")
        return str(status["heartbeat"]) == "lost"

    await wait_for(heartbeat_lost, "A's heartbeat to find its lease lost", within=REPLY_TIMEOUT)
    refused(await a.call("write", **fence(ta, 5)), "begin")
    assert cluster.decisions() == [(KEY, ta, "a", 1), (KEY, tb, "b", 2), (KEY, tb, "b", 4)]
    await assert_owner(cluster, "b", tb)


async def test_worker_paused_inside_fenced_transaction(cluster: Cluster) -> None:
    """A is frozen with SIGSTOP inside an open fenced transaction, past its lease. It
    still holds SQLite's write lock, so B cannot take over while A is frozen (safety
    kept, liveness waits). After SIGCONT, A's commit is refused and its rows rolled back,
    B takes over at a greater term and its commits are accepted."""
    a, b = await cluster.spawn("a", "b")
    await cluster.add_task(KEY)
    await a.ok("register", ttl=1.0)
    await a.ok("heartbeat", ttl=1.0, every=0.1)
    await b.ok("register", ttl=LONG)
    ta = await claim_one(a)

    assert (await a.call("open", **fence(ta, 1))).get("in_tx") is True
    a.pause()
    await cluster.wait_expired("a")
    await b.send("claim", kinds=[KIND], limit=1, ack=True)
    assert (await b.recv()).get("started") is True
    await b.expect_silent(BLOCKED)  # the frozen transaction still holds the lock

    await a.send("commit")
    a.resume()
    late = await a.recv()
    refused(late, "commit")
    takeover = await b.recv()
    assert takeover.get("ok") is True, takeover
    assert takeover["t_end"] > late["t_commit"]
    [[_, _, tb]] = takeover["claims"]
    assert tb > ta
    assert cluster.decisions() == []

    await b.ok("write", **fence(tb, 2))
    refused(await a.call("write", **fence(ta, 3)), "begin")

    async def heartbeat_lost() -> bool:
        status = await a.ok("status")
        return str(status["heartbeat"]) == "lost"

    await wait_for(heartbeat_lost, "A's heartbeat to find its lease lost", within=REPLY_TIMEOUT)
    await b.ok("write", **fence(tb, 4))
    assert cluster.decisions() == [(KEY, tb, "b", 2), (KEY, tb, "b", 4)]
    await assert_owner(cluster, "b", tb)


# -- cancellation -------------------------------------------------------------------------


async def test_cancelled_fenced_attempt_leaves_no_transaction_open(cluster: Cluster) -> None:
    """A fenced transaction cancelled while it waits for the write lock (a run past its
    timeout, a worker stopping) must not take the lock later behind its caller's back:
    once the writer it waited for is done, the lock is free for every process.

    B has a pool of one connection, so its next store call runs after the abandoned
    ``BEGIN`` on the same connection: by then that statement has had its effect.
    """
    (a,) = await cluster.spawn("a")
    (b,) = await cluster.spawn("b", options="pool=1")
    await cluster.add_task(KEY)
    await a.ok("register", ttl=LONG)
    await b.ok("register", ttl=LONG)
    ta = await claim_one(a)

    assert (await a.call("open", **fence(ta, 1))).get("in_tx") is True  # a holds the write lock
    await b.send("give_up", **fence(ta, 2), after=BLOCKED)  # b waits for the lock, then gives up
    assert (await b.recv()).get("cancelling") is True
    await a.send("commit")
    assert (await a.recv()).get("ok") is True
    gave_up = await b.recv()
    assert gave_up.get("gave_up") is True, gave_up

    assert (await b.ok("claim", kinds=[KIND], limit=1))["claims"] == []  # b's connection is usable
    assert cluster.db.write_lock_free(), "a cancelled fenced attempt left SQLite's write lock taken"
    await a.ok("write", **fence(ta, 3))
    assert cluster.decisions() == [(KEY, ta, "a", 1), (KEY, ta, "a", 3)]
