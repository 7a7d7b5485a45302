"""Replay a rosbag2 file onto live topics (the project's stand-in for ``ros2 bag play``).

Messages go out as the bag's raw CDR bytes (rclpy publishes serialized messages as is), so no
per-type conversion happens and what the node receives is byte-for-byte what was recorded.
Topics whose message package has no Python module here (tf2_msgs has no PyPI wheel) are skipped
and reported; the node takes its camera extrinsic from a parameter instead.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from ..bag.reader import iter_raw_messages


def message_class(msgtype: str) -> Optional[type]:
    """Python class of ``pkg/msg/Name`` when its package is importable, else None."""
    try:
        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ValueError, ImportError, AttributeError):
        return None


class BagReplayer(Node):
    """Publishes a bag's messages with their recorded timing scaled by ``rate`` (0 = as fast as possible)."""

    def __init__(self, bag_path: Path, *, rate: float = 1.0, topics: Optional[Iterable[str]] = None,
                 node_name: str = "scene_vlm_replay", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.bag_path = Path(bag_path)
        self.rate = rate
        self.topics = list(topics) if topics is not None else None
        self.published: Counter[str] = Counter()
        self.skipped_topics: dict[str, str] = {}
        self._pubs: dict[str, Any] = {}
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.finished = threading.Event()

    def _publisher(self, topic: str, msgtype: str) -> Any:
        if topic in self._pubs:
            return self._pubs[topic]
        cls = message_class(msgtype)
        if cls is None:
            self.skipped_topics[topic] = msgtype
            self.get_logger().warning(f"not replaying {topic}: no Python module for {msgtype}")
            self._pubs[topic] = None
            return None
        latched = topic == "/tf_static" or topic.endswith("/labels")
        # Images go out best-effort, as camera drivers publish them: a reliable publisher blocks
        # (holding the GIL) while a busy subscriber acknowledges megabyte images, and in one process
        # that stalls the very node it feeds. Odometry, TF, labels and camera info stay reliable.
        image = msgtype == "sensor_msgs/msg/Image"
        qos = QoSProfile(depth=100,
                         reliability=ReliabilityPolicy.BEST_EFFORT if image else ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
        self._pubs[topic] = self.create_publisher(cls, topic, qos)
        return self._pubs[topic]

    def prepare(self) -> None:
        """Create every publisher up front (so subscribers can match before the first message)."""
        seen = set()
        for topic, msgtype, _data, _stamp in iter_raw_messages(self.bag_path, self.topics):
            if topic not in seen:
                seen.add(topic)
                self._publisher(topic, msgtype)

    def wait_for_subscribers(self, topics: Iterable[str], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        topics = list(topics)
        while time.monotonic() < deadline:
            if all(self._pubs.get(t) is not None and self._pubs[t].get_subscription_count() > 0 for t in topics):
                return True
            time.sleep(0.05)
        return False

    def play(self, on_message: Optional[Callable[[str, int], None]] = None) -> Counter[str]:
        """Publish everything (blocking); returns the count per topic."""
        t_wall0: Optional[float] = None
        t_bag0 = 0
        for topic, msgtype, data, stamp_ns in iter_raw_messages(self.bag_path, self.topics):
            if self._stop.is_set():
                break
            pub = self._publisher(topic, msgtype)
            if pub is None:
                continue
            if t_wall0 is None:
                t_wall0, t_bag0 = time.monotonic(), stamp_ns
            if self.rate > 0:
                due = t_wall0 + (stamp_ns - t_bag0) * 1e-9 / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            pub.publish(bytes(data))
            self.published[topic] += 1
            if on_message is not None:
                on_message(topic, stamp_ns)
        self.finished.set()
        return self.published

    def play_async(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.play, name="bag-replay", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

