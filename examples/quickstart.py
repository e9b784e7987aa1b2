"""A small tenure app: one `greet` task per city, writing what it decided through a
fenced commit. Run workers with `tenure worker examples.quickstart:app`."""

from __future__ import annotations

import logging

import tenure

# The store comes from TENURE_STORE (default sqlite:///tenure.db).
app = tenure.App()
log = logging.getLogger("quickstart")


@app.task("greet", every=2.0, timeout=1.5)
async def greet(ctx: tenure.Context) -> None:
    async with ctx.fenced() as tx:
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS greetings (city TEXT, term INTEGER, at REAL)",
        )
        await tx.execute(
            "INSERT INTO greetings (city, term, at) VALUES (?, ?, ?)", (ctx.key, ctx.token, ctx.scheduled_at)
        )
    log.info("greeted %s at term %d", ctx.key, ctx.token)
