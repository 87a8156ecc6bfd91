"""Fault injection for the crash tests: `MONITOR_FAULT=<point>` in the
environment makes the process kill itself (SIGKILL, as `kill -9` would) when it
reaches `fault(<point>)`. Unset, `fault` does nothing. The points:

- `after_plan`: an action's plan and held messages are recorded, the registry
  is not written yet (monitor.actions.execute);
- `after_registry_write`: the registry is written, the action is not recorded
  as executed and nothing is announced yet;
- `after_kafka_send`: a message reached Kafka, the outbox does not know yet
  (monitor.actions.publish).
"""

from __future__ import annotations

import logging
import os
import signal

VARIABLE = "MONITOR_FAULT"


def fault(point: str) -> None:
    if os.environ.get(VARIABLE) == point:
        logging.getLogger(__name__).critical("fault injection: killed at %s (%s is set)",
                                             point, VARIABLE)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
