"""One demo worker process: ``python -m tenure.demo.worker NAME``.

The same as ``tenure worker tenure.demo.domain:app --id NAME`` (the store from
``TENURE_STORE``), with tenure's logs at INFO on stderr, which the demo keeps in a file
per worker and which its chaos monkey reads to pause a worker in the middle of a dispatch.
"""

from __future__ import annotations

import sys

from tenure import cli, logs


def main(argv: list[str]) -> int:
    logs.configure()
    return cli.main(["worker", "tenure.demo.domain:app", "--id", argv[0]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
