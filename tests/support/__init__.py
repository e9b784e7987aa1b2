"""What the test folders share: one toolkit instead of one harness per folder.

- :mod:`support.stores`: a scratch database of each store kind, and the fixture parts
  every multi-process suite repeats (open the store, reap the workers, print their logs).
- :mod:`support.sql`: SQL text per dialect (the database clock, placeholders, column
  types) for the tables tests write beside tenure's own.
- :mod:`support.rawdb`: raw access to the database behind a store URL, outside the store
  API: statements, which sessions of a process are inside a transaction, SQLite's write
  lock, cutting a process's connections, stopping and starting the server.
- :mod:`support.processes`: the test's handle on one child process (signals, exit, log,
  events), and waits on a condition with a deadline.
- :mod:`support.cluster`: worker processes on one store, observed through the database:
  start, reap, wait for a fair share, wait on conditions, never a fixed sleep.
- :mod:`support.events`: the side channel children write (one JSON line per event, kept
  on SIGKILL) and the parent reads.
- :mod:`support.child`: the skeleton of a worker child program (command line, settings,
  logging, stack dumps on SIGUSR1/SIGUSR2).
- :mod:`support.history`: the fenced-history checker: invariants over the commits a
  workload recorded, as violations (:func:`~support.history.check`) or assertions
  (:func:`~support.history.assert_fenced_history`).

Child programs import this package by putting ``tests/`` on ``sys.path``; everything in
it imports only the standard library, tenure and the stores' drivers.
"""
