"""The ROS-free core logs with Python's ``logging`` (it knows nothing of rclpy); in a node those records must
reach rcutils like the node's own lines: on the console with the node's name, in ``/rosout`` and the ROS log
files, filtered by the node's severity. Without a handler Python prints only WARNING and above, bare, through
``logging.lastResort``, and nothing reaches ``/rosout``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CORE_LOGGER = "regionadapt_ros"


class RosLogHandler(logging.Handler):
    """Python log records → an rclpy logger's severity methods (CRITICAL → fatal)."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.DEBUG)
        self._ros_logger = ros_logger
        # The record's module logger in brackets: rcutils prefixes the node's name, not where the line came from.
        self.setFormatter(logging.Formatter("[%(name)s] %(message)s"))

    def use(self, ros_logger: Any) -> None:
        """Send later records to ``ros_logger``: the node's own logger once the node exists. Its name is the
        one rcl registers for /rosout (``<namespace>.<name>``, after remapping); a logger fetched by the bare
        node name before the node existed is another logger: under a namespace its lines would not reach
        /rosout and would not follow the node's log level."""
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            level = record.levelno
            if level >= logging.CRITICAL:
                self._ros_logger.fatal(message)
            elif level >= logging.ERROR:
                self._ros_logger.error(message)
            elif level >= logging.WARNING:
                self._ros_logger.warning(message)
            elif level >= logging.INFO:
                self._ros_logger.info(message)
            else:
                self._ros_logger.debug(message)
        except Exception:  # a logging failure must never take a frame down with it
            self.handleError(record)


@contextmanager
def core_logging_to(ros_logger: Any, level: int = logging.INFO) -> Iterator[RosLogHandler]:
    """While inside: the core's records at ``level`` and above go to ``ros_logger`` only (not also to Python's
    last-resort stderr line); afterwards the core logger is as it was."""
    core = logging.getLogger(CORE_LOGGER)
    handler = RosLogHandler(ros_logger)
    saved = (core.level, core.propagate)
    core.addHandler(handler)
    core.setLevel(level)
    core.propagate = False
    try:
        yield handler
    finally:
        core.removeHandler(handler)
        core.setLevel(saved[0])
        core.propagate = saved[1]
