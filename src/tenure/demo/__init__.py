"""``tenure demo``: courier dispatch across a cluster of worker processes, with chaos,
and a proof at the end.

- :mod:`tenure.demo.domain`: the dispatch domain, written as a user of tenure would.
- :mod:`tenure.demo.processes`: the worker processes; :mod:`tenure.demo.worker` is one.
- :mod:`tenure.demo.chaos`: the seeded chaos monkey.
- :mod:`tenure.demo.view`: the live terminal view.
- :mod:`tenure.demo.checker`: the checks run on the history the database kept.
- :mod:`tenure.demo.runner`: the controller behind ``tenure demo``.
"""
