"""Forward the core's and the VLM code's Python ``logging`` records to a node's rclpy logger.

``core/`` and ``vlm/`` log through module loggers (they must not import rclpy); the node's rclpy
logger is what reaches ``/rosout``, ``ros2 launch`` output and log files. :func:`install_log_bridge`
attaches one :class:`RosLogHandler` to the ``scene_vlm_ros`` logger (the parent of every module
logger in the package), and :meth:`RosLogHandler.remove` takes it off again (node shutdown).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["RosLogHandler", "install_log_bridge", "rcl_method_for"]

PACKAGE_LOGGER = "scene_vlm_ros"


def rcl_method_for(levelno: int) -> str:
    """Name of the rclpy ``RcutilsLogger`` method for a Python log level (DEBUG..CRITICAL)."""
    if levelno >= logging.CRITICAL:
        return "fatal"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


class RosLogHandler(logging.Handler):
    """A ``logging.Handler`` writing each record to an rclpy logger (``node.get_logger()``).

    The message is prefixed with the record's logger name (``[scene_vlm_ros.core.fusion] ...``) so
    ``/rosout`` still says which module spoke; exception tracebacks are appended as ``logging``
    formats them. A failing rclpy logger (context already shut down) never raises into the caller.
    """

    def __init__(self, ros_logger: Any, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.ros_logger = ros_logger
        self._attached: list[tuple[logging.Logger, bool]] = []
        self.setFormatter(logging.Formatter("[%(name)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            # One call site per severity: rclpy caches each call site's severity and raises
            # "Logger severity cannot be changed between calls" when one line logs at two levels.
            method = rcl_method_for(record.levelno)
            if method == "fatal":
                self.ros_logger.fatal(text)
            elif method == "error":
                self.ros_logger.error(text)
            elif method == "warning":
                self.ros_logger.warning(text)
            elif method == "info":
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # noqa: BLE001 - logging must never take the caller down
            self.handleError(record)

    def attach(self, logger: logging.Logger, exclusive: bool) -> None:
        logger.addHandler(self)
        self._attached.append((logger, logger.propagate))
        if exclusive:
            # The root logger's console handler would print every record a second time beside
            # rclpy's own console output.
            logger.propagate = False
        if logger.getEffectiveLevel() > self.level:
            logger.setLevel(self.level)

    def remove(self) -> None:
        """Detach from every logger this handler was installed on (restores ``propagate``)."""
        for logger, propagate in self._attached:
            logger.removeHandler(self)
            logger.propagate = propagate
        self._attached.clear()


def install_log_bridge(ros_logger: Any, logger_names: tuple[str, ...] = (PACKAGE_LOGGER,),
                       level: int = logging.INFO, exclusive: bool = True) -> RosLogHandler:
    """Forward records of ``logger_names`` (and their children) at ``level`` or above to ``ros_logger``.

    Args:
        ros_logger: the node's logger (``node.get_logger()``).
        logger_names: Python loggers to bridge; the default covers all of ``scene_vlm_ros``.
        level: lowest Python level forwarded (the rclpy logger's own severity filter still applies).
        exclusive: stop these records from also reaching the root logger's handlers.

    Returns:
        The handler; call ``.remove()`` when the node shuts down.
    """
    handler = RosLogHandler(ros_logger, level)
    for name in logger_names:
        handler.attach(logging.getLogger(name), exclusive)
    return handler
