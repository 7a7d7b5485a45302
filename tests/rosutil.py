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


_next_offset = [0]


def fresh_domain() -> int:
    """A ROS domain of its own for each graph in this process (graphs in one test module must not
    see each other's nodes or topics). Base from conftest (per process), offsets 0, 1, 2, ..."""
    import os

    base = int(os.environ["ROS_DOMAIN_ID"])
    domain = base + 100 * (_next_offset[0] % 2) + _next_offset[0] // 2
    _next_offset[0] += 1
    return domain % 230


def replay_in_own_process(bag: Any, domain_id: int, rate: float = 1.0,
                          wait_for: tuple[str, ...] = ("/camera/depth/image_raw",), timeout_s: float = 120.0) -> dict:
    """Play ``bag`` with ``scene-vlm replay`` in a process of its own, at ``rate`` (as a camera driver
    would publish: another process, real time); returns the published counts per topic."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id)}
    cmd = [sys.executable, "-c", "from scene_vlm_ros.cli import main; main()", "replay", str(bag),
           "--rate", str(rate)]
    for topic in wait_for:
        cmd += ["--wait-for", topic]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"replay failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["published"]


def ask_scene_query(domain_id: int, request: Any, proc: Any = None, retry_codes: tuple[int, ...] = (),
                    timeout_s: float = 60.0) -> Any:
    """Call ``/scene_query`` of a node in another process (domain ``domain_id``) from a client here;
    while the answer's code is in ``retry_codes`` (e.g. NO_MAP_YET while a replay is mapping), ask
    again. ``proc``: that node's Popen, checked to be alive while waiting."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from scene_vlm_interfaces.srv import SceneQuery

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = rclpy.create_node("scene_query_test_client", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s

    def alive() -> None:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the node exited with {proc.returncode}: {proc.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from /scene_query within {timeout_s} s")

    try:
        client = node.create_client(SceneQuery, "/scene_query")
        while not client.wait_for_service(timeout_sec=0.5):
            alive()
        while True:
            future = client.call_async(request)
            while not future.done():
                executor.spin_once(timeout_sec=0.1)
                alive()
            resp = future.result()
            if resp.error_code not in retry_codes:
                return resp
            time.sleep(0.5)
            alive()
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def stop_process(proc: Any, timeout_s: float = 30.0) -> int:
    """Ctrl-C (SIGINT) a node process and wait for it; killed (and TimeoutExpired raised) if it hangs."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
