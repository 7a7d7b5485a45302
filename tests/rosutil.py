"""Helpers for in-process node tests: a client node in the graph's context and blocking calls."""

from __future__ import annotations

import time
from typing import Any

import rclpy
from rclpy.node import Node


def make_client_node(bringup: Any, name: str = "test_client") -> Node:
    node = rclpy.create_node(name, context=bringup.context)
    bringup.add_node(node)
    return node


def call(client: Any, request: Any, timeout_s: float = 30.0) -> Any:
    """Call a service through the graph's spinning executor and wait for the response."""
    if not client.wait_for_service(timeout_sec=10.0):
        raise TimeoutError(f"service {client.srv_name} not available")
    future = client.call_async(request)
    deadline = time.monotonic() + timeout_s
    while not future.done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no response from {client.srv_name} within {timeout_s} s")
        time.sleep(0.005)
    return future.result()


def wait_until(predicate: Any, timeout_s: float = 30.0, period_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return False
