"""``scene-vlm bench ingest``: how many camera frames the node integrates the way a robot runs it.

Three processes, as on a robot: the node (``scene-vlm run --config ...``), a player publishing a
bag at its recorded rate (``scene-vlm replay BAG --rate 1.0``, the stand-in for the camera driver
and the odometry), and this monitor, which reads ``/diagnostics`` and, at the end, the node's
``~/list_objects``. Reported as JSON:

- frames published (depth images the player sent), received, integrated, skipped by the
  ``mapping.max_rate_hz`` policy, and dropped by reason;
- integration time p50 / p95 (ms, from the node's diagnostics);
- instance recall at IoU 0.25 / 0.5 against the bag's ground truth (``X.gt.json``), beside the
  recall of the offline map of the same bag (``scene-vlm map``'s path), so "recall equal to
  offline" is checked in one run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from . import emit_json

DEFAULT_CONFIG = Path(__file__).resolve().parents[4] / "config" / "scene_vlm.yaml"


def _cli() -> list[str]:
    exe = shutil.which("scene-vlm", path=str(Path(sys.executable).parent)) or shutil.which("scene-vlm")
    return [exe] if exe else [sys.executable, "-c", "from scene_vlm_ros.cli import main; main()"]


class _Monitor:
    """A small rclpy node in this process: latest diagnostics of the scene_vlm node."""

    def __init__(self, node_name: str = "scene_vlm") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        from scene_vlm_interfaces.srv import ListObjects

        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("scene_vlm_bench_monitor", context=self.context)
        self.kv: dict[str, str] = {}
        self.level = -1
        self.history: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.list_client = self.node.create_client(ListObjects, f"/{node_name}/list_objects")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            if "scene memory" in st.name:
                kv = {v.key: v.value for v in st.values}
                with self._lock:
                    self.kv, self.level = kv, int.from_bytes(st.level, "little") if isinstance(
                        st.level, bytes) else int(st.level)
                    self.history.append((time.monotonic(), kv))

    def latest(self) -> dict[str, str]:
        with self._lock:
            return dict(self.kv)

    def list_objects(self, timeout_s: float = 20.0) -> list[Any]:
        from scene_vlm_interfaces.srv import ListObjects

        if not self.list_client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError("the node's list_objects service did not appear")
        fut = self.list_client.call_async(ListObjects.Request())
        deadline = time.monotonic() + timeout_s
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not fut.done():
            raise TimeoutError("no answer from list_objects")
        return list(fut.result().objects)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)


def _boxes_from_msgs(objects: list[Any]) -> list[Any]:
    """Duck-typed instances (``.box``) from ObjectBox3D messages, for the recall metric."""
    from ..ros.conversions import box_to_oriented_box

    return [SimpleNamespace(box=box_to_oriented_box(o), instance_id=o.instance_id, label=o.label) for o in objects]


def _num(kv: dict[str, str], key: str, default: float = 0.0) -> float:
    try:
        return float(kv.get(key, default))
    except ValueError:
        return default


def bench_ingest(
    bag: Path,
    *,
    rate: float = 1.0,
    config: Optional[Path] = None,
    overrides: Optional[dict[str, Any]] = None,
    offline: bool = True,
    settle_s: float = 60.0,
    log_dir: Optional[Path] = None,
) -> dict[str, Any]:
    """Run node + player as separate processes on ``bag``; return the figures (see module doc)."""
    from ..bag.reader import read_bag_info
    from ..bag.topics import TOPIC_DEPTH

    bag = Path(bag)
    info = read_bag_info(bag)
    from ..paths import use_fastdds_profile

    config = Path(config or DEFAULT_CONFIG)
    use_fastdds_profile()  # this monitor, and (through the environment) the node and the player
    env = dict(os.environ)
    sets = {"topics.reliable": False, **(overrides or {})}
    node_cmd = [*_cli(), "run", "--config", str(config)]
    for k, v in sets.items():
        node_cmd += ["--set", f"{k}={json.dumps(v)}"]
    log_dir = Path(log_dir) if log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    node_log = open(log_dir / "node.log", "w") if log_dir else subprocess.DEVNULL  # noqa: SIM115
    monitor = _Monitor()
    node_proc = subprocess.Popen(node_cmd, env=env, stdout=node_log, stderr=subprocess.STDOUT)
    result: dict[str, Any] = {"bag": str(bag), "rate": rate, "frames_in_bag": info.topics.get(
        TOPIC_DEPTH).count if TOPIC_DEPTH in info.topics else None, "node_overrides": sets}
    try:
        t0 = time.monotonic()
        while not monitor.latest():
            if node_proc.poll() is not None:
                raise RuntimeError(f"the node exited with {node_proc.returncode} before it was active")
            if time.monotonic() - t0 > 60:
                raise TimeoutError("no diagnostics from the node within 60 s")
            time.sleep(0.1)
        player = subprocess.run(
            [*_cli(), "replay", str(bag), "--rate", str(rate), "--wait-for", TOPIC_DEPTH, "--wait-s", "20"],
            env=env, capture_output=True, text=True, timeout=max(120.0, 4 * info.duration_s / max(rate, 1e-3)))
        if player.returncode != 0:
            raise RuntimeError(f"player failed: {player.stderr[-2000:]}")
        published = json.loads(player.stdout.strip().splitlines()[-1])["published"]
        result["published"] = published
        # Let the node finish what is queued: integrated + dropped stops changing.
        last, stable_since = None, time.monotonic()
        t_end = time.monotonic() + settle_s
        while time.monotonic() < t_end:
            kv = monitor.latest()
            key = (kv.get("frames_integrated"), kv.get("frames_waiting_for_mapping"), kv.get("map_refreshed_frames"))
            if key != last:
                last, stable_since = key, time.monotonic()
            elif time.monotonic() - stable_since > 3.0 and kv.get("frames_waiting_for_mapping", "0") == "0":
                break
            time.sleep(0.2)
        kv = monitor.latest()
        objects = monitor.list_objects()
    finally:
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        monitor.close()
    n_pub = int(published.get(TOPIC_DEPTH, 0))
    integrated = int(_num(kv, "frames_integrated"))
    skipped = int(_num(kv, "frames_skipped_by_rate_policy"))
    dropped = {k[len("dropped_"):]: int(_num(kv, k)) for k in kv if k.startswith("dropped_") and _num(kv, k) > 0}
    rejected = {k[len("rejected_"):]: int(_num(kv, k)) for k in kv if k.startswith("rejected_") and _num(kv, k) > 0}
    duration = info.duration_s / max(rate, 1e-9)
    result.update({
        "frames_published": n_pub,
        "frames_received": int(_num(kv, "received_depth", _num(kv, "frames_received"))),
        "frames_integrated": integrated,
        "frames_skipped_by_policy": skipped,
        "frames_dropped": dropped,
        "frames_rejected_by_mapping": rejected,
        "integrated_or_skipped_share": (integrated + skipped) / n_pub if n_pub else None,
        "effective_integration_hz": integrated / duration if duration > 0 else None,
        "integration_ms_p50": _num(kv, "integration_ms_p50", float("nan")),
        "integration_ms_p95": _num(kv, "integration_ms_p95", float("nan")),
        "instances_live": len(objects),
        "diagnostics": kv,
    })
    gt_path = bag.parent / f"{bag.name if bag.is_dir() else bag.stem}.gt.json"
    if gt_path.is_file():
        from ..datasets.synthetic import read_ground_truth
        from ..eval.mapping_metrics import instance_recall

        gt_objects, _ = read_ground_truth(gt_path)
        result["recall_live"] = instance_recall(_boxes_from_msgs(objects), gt_objects)
        if offline:
            from ..core.mapping_worker import MappingWorkerConfig
            from ..ros.bringup import load_params_file
            from ..ros.params import PARAMETERS
            from .map import map_source

            # The offline map with the node's own mapping policy (rate, refresh), as the node ran it.
            values = {k: v[0] for k, v in PARAMETERS.items()}
            values.update(load_params_file(config))
            values.update(sets)
            memory, stats = map_source(bag, worker_config=MappingWorkerConfig(
                queue_size=10_000, max_rate_hz=float(values["mapping.max_rate_hz"]),
                refresh_period_s=float(values["mapping.refresh_period_s"])))
            snap = memory.snapshot(allow_stale=True)
            result["recall_offline"] = instance_recall(snap.instances, gt_objects)
            result["instances_offline"] = len(snap.instances)
            result["frames_integrated_offline"] = stats["frames_integrated"]
    return result


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="scene-vlm bench ingest", description=__doc__.splitlines()[0])
    ap.add_argument("bag", type=Path)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="node parameter name=value (YAML)")
    ap.add_argument("--no-offline", action="store_true", help="skip the offline map comparison")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here (and node.log beside it)")
    args = ap.parse_args(argv)
    import yaml

    overrides = {}
    for item in args.sets:
        k, _, v = item.partition("=")
        overrides[k.strip()] = yaml.safe_load(v)
    res = bench_ingest(args.bag, rate=args.rate, config=args.config, overrides=overrides, offline=not args.no_offline,
                       log_dir=args.out.parent if args.out else None)
    emit_json(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
