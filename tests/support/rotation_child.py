"""A container using statusd-client through a secret rotation (run with `python -m`).

Configured by STATUSD_URL / STATUSD_WORKLOAD_ID / STATUSD_HEARTBEAT_TOKEN; reports RUNNING with
the heartbeat interval statusd tells it, and logs what the client logs (INFO) to stdout, so the
test can read whether it ever was refused and when it switched tokens.
"""

from __future__ import annotations

import logging
import sys
import time

from statusd_client import Heartbeater


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
    with Heartbeater.from_env(interval=0.2) as hb:
        hb.set("RUNNING", "serving")
        print("running", flush=True)
        while True:
            time.sleep(0.1)


if __name__ == "__main__":
    main()
