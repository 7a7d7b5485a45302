"""``scene-vlm eval SOURCE --queries Q.json --out DIR``: score a model on a bag or scan, offline or live.

SOURCE is a rosbag2 bag (any topic names via ``--topics``; raw or compressed images), a
ScanNet-layout scan or a 7-Scenes folder. Q.json is a plain query list, our generated
``X.queries.json`` or a benchmark annotation file (see :mod:`scene_vlm_ros.eval.replay_eval`).

- Offline (default): the source is mapped with :func:`scene_vlm_ros.commands.map.map_source` (the
  node's ingest path) and each query goes to the node's :class:`~scene_vlm_ros.vlm.engine.QueryEngine`
  with the chosen backend and prompt profile: the prompt a checkpoint is scored with here is the one
  the node sends.
- ``--live``: a ``scene-vlm run`` node is started in another process with the same backend and
  profile (``--attach`` uses one that is already running), the bag is replayed onto its topics
  (:class:`~scene_vlm_ros.ros.replay_node.BagReplayer`) and each query goes through ``/scene_query``,
  so the score includes time sync, queues, drops and timeouts.

Writes ``DIR/metrics.json``, ``DIR/answers.jsonl`` (one row per query) and ``DIR/report.html``
(:mod:`scene_vlm_ros.eval.report`). Exit status: 0 when evaluated, 2 for unusable input (the
message says why; nothing is written).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core.types import GroundTruthObject, Instance, SceneSnapshot
from ..eval.replay_eval import QueryFileError, QueryLoad, aggregate, answer_query, load_queries
from ..vlm.engine import ErrorCode, QueryEngine, QueryRequest, QueryResult

logger = logging.getLogger(__name__)

BACKENDS = ("fallback", "transformers", "openai")


class EvalInputError(ValueError):
    """Unusable command-line input (source, query file, backend, topics); exit status 2."""


@dataclass
class EvalSetup:
    """Everything :func:`run_eval` needs, validated (see :func:`parse_args` for the meaning of each)."""

    source: Path
    queries: Path
    out: Path
    backend: str = "fallback"
    model_path: Optional[Path] = None
    base_url: str = "http://127.0.0.1:8000"
    model: str = ""
    device: str = "auto"
    prompt_profile: str = "default"
    n_frames: Optional[int] = None
    topics: dict[str, str] = field(default_factory=dict)
    gt: Optional[Path] = None
    benchmark: str = "auto"
    scene_id: Optional[str] = None
    live: bool = False
    attach: bool = False
    rate: float = 1.0
    timeout_s: float = 60.0
    max_frames: Optional[int] = None
    use_mask: bool = True
    limit: Optional[int] = None
    progress: bool = True
    node_name: str = "scene_vlm"
    max_rate_hz: Optional[float] = None


# ---------------------------------------------------------------------------------------------
# Inputs: source kind, ground truth, topics, backend
# ---------------------------------------------------------------------------------------------


def source_kind(source: Path) -> str:
    """``"scannet"`` | ``"7scenes"`` | ``"bag"`` (EvalInputError when it is none of them)."""
    if not source.exists():
        raise EvalInputError(f"source {source} does not exist (give a rosbag2 bag, a ScanNet scan or a "
                             "7-Scenes folder)")
    if source.is_dir() and all((source / d).is_dir() for d in ("color", "depth", "pose", "intrinsic")):
        return "scannet"
    if source.is_dir() and (source / "camera-intrinsics.txt").is_file():
        return "7scenes"
    if (source.is_dir() and (source / "metadata.yaml").is_file()) or source.suffix in (".mcap", ".db3"):
        return "bag"
    raise EvalInputError(f"{source}: not a rosbag2 bag (metadata.yaml, .mcap, .db3), a ScanNet scan "
                         "(color/ depth/ pose/ intrinsic/) nor a 7-Scenes folder (camera-intrinsics.txt)")


def sidecar(source: Path, suffix: str) -> Path:
    """``X<suffix>`` beside a bag directory ``X`` or a bag file ``X.mcap``."""
    stem = source.stem if source.suffix in (".mcap", ".db3") else source.name
    return source.parent / f"{stem}{suffix}"


def load_ground_truth(setup: EvalSetup, kind: str) -> list[GroundTruthObject]:
    """Ground-truth objects: ``--gt``, else ``X.gt.json`` beside a bag, else a ScanNet scan's annotation."""
    from ..datasets.synthetic import read_ground_truth

    path = setup.gt or (sidecar(setup.source, ".gt.json") if kind == "bag" else None)
    if path is not None and Path(path).is_file():
        try:
            return read_ground_truth(path)[0]
        except Exception as exc:  # LayoutError, KeyError, JSON errors: all mean "not a ground-truth file"
            raise EvalInputError(f"{path}: not a ground-truth file ({exc})") from exc
    if setup.gt is not None:
        raise EvalInputError(f"ground-truth file not found: {setup.gt}")
    if kind == "scannet":
        from ..datasets.scannet import ScanNetScan
        from ..datasets.seven_scenes import DatasetFormatError

        try:
            scan = ScanNetScan(setup.source)
            if scan.has_ground_truth:
                return scan.ground_truth_objects()
        except (DatasetFormatError, FileNotFoundError) as exc:
            raise EvalInputError(f"{setup.source}: not a readable ScanNet scan ({exc})") from exc
    return []


def parse_topics(items: Sequence[str]) -> dict[str, str]:
    """``["color=/cam/rgb", "depth=/cam/depth"]`` (or comma-separated) -> BagTopics field overrides."""
    from ..bag.reader import BagTopics

    fields = set(vars(BagTopics()))
    out: dict[str, str] = {}
    for item in items:
        for part in str(item).split(","):
            if not part.strip():
                continue
            name, sep, topic = part.partition("=")
            name = name.strip()
            if not sep or name not in fields or not topic.strip().startswith("/"):
                raise EvalInputError(f"--topics {part!r}: expected NAME=/topic with NAME in {sorted(fields)}")
            out[name] = topic.strip()
    return out


def make_loaded_backend(setup: EvalSetup) -> Any:
    """The backend of ``setup``, loaded (EvalInputError with the backend's own message when it cannot load)."""
    from ..vlm.backends.factory import make_backend
    from ..vlm.types import ModelUnavailableError

    params: dict[str, Any] = {}
    if setup.backend == "transformers":
        if setup.model_path is None:
            raise EvalInputError("--backend transformers needs --model-path DIR (a local Qwen2-VL checkpoint)")
        params = {"model_path": str(setup.model_path), "device": setup.device}
    elif setup.backend == "openai":
        params = {"base_url": setup.base_url, "model": setup.model or "default"}
    try:
        backend = make_backend(setup.backend, **params)
        backend.load()
    except (ModelUnavailableError, ValueError) as exc:
        raise EvalInputError(f"backend {setup.backend}: {exc}") from exc
    return backend


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------


class _Progress:
    """A rich progress bar (or nothing) with one task at a time."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), transient=False)
            self.bar.start()
        self.task: Any = None

    def start(self, description: str, total: Optional[int]) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, n)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _MappingTimeline:
    """Passed as ``progress`` to :func:`map_source`: truthy (so it shows its bar), and records
    ``(t_s, frames)`` samples when map_source calls it with ``(frames_done, total)``."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.samples: list[tuple[float, int]] = [(0.0, 0)]

    def __bool__(self) -> bool:
        return True

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        self.samples.append((time.monotonic() - self.t0, int(done)))


# ---------------------------------------------------------------------------------------------
# Offline
# ---------------------------------------------------------------------------------------------


@dataclass
class Answerer:
    """How queries are asked: the asking callable, the instances (for captioning) and the snapshot
    for the report's pictures (None in live mode when the node could not save its memory)."""

    ask: Callable[[QueryRequest], QueryResult]
    instances: Sequence[Instance]
    snapshot: Optional[SceneSnapshot]
    mapping: dict[str, Any]
    timeline: list[tuple[float, int]]
    close: Callable[[], None] = lambda: None


def mapping_rate_hz(setup: EvalSetup) -> float:
    """``--max-rate-hz``, else the node's ``mapping.max_rate_hz`` default (frames/s of sensor time; 0 = all)."""
    from ..ros.params import PARAMETERS

    return float(setup.max_rate_hz if setup.max_rate_hz is not None else PARAMETERS["mapping.max_rate_hz"][0])


def offline_answerer(setup: EvalSetup, backend: Any) -> Answerer:
    """Map the source with map_source, answer on its snapshot with the node's QueryEngine."""
    from ..bag.reader import BagReadError, BagTopics
    from ..core.mapping_worker import MappingWorkerConfig
    from ..datasets.seven_scenes import DatasetFormatError
    from ..ros.params import PARAMETERS
    from .map import MapSourceError, map_source

    timeline = _MappingTimeline()
    # The node's integration-rate policy and refresh period, so offline maps what the robot maps.
    worker = MappingWorkerConfig(max_rate_hz=mapping_rate_hz(setup),
                                 refresh_period_s=float(PARAMETERS["mapping.refresh_period_s"][0]))
    try:
        memory, stats = map_source(setup.source, None, topics=BagTopics(**setup.topics), use_mask=setup.use_mask,
                                   max_frames=setup.max_frames, progress=timeline if setup.progress else False,
                                   worker_config=worker)
    except (MapSourceError, BagReadError, DatasetFormatError, FileNotFoundError) as exc:
        hint = ""
        if source_kind(setup.source) == "scannet":
            hint = (f"; if this map_source cannot read ScanNet scans, convert the scan first: scene-vlm make-bag "
                    f"--source scannet --dataset-dir {setup.source} --out BAG, then evaluate BAG (its BAG.gt.json "
                    f"holds the scan's objects) with --scene-id {setup.source.name}")
        raise EvalInputError(f"cannot map {setup.source}: {exc}{hint}") from exc
    snapshot = memory.snapshot(refresh=True)
    if len(timeline.samples) < 2 and stats.get("wall_s"):
        timeline.samples.append((float(stats["wall_s"]), int(stats.get("frames_integrated", 0))))
    engine = QueryEngine(backend, prompt_profile=setup.prompt_profile, n_frames=setup.n_frames)

    def ask(req: QueryRequest) -> QueryResult:
        t0 = time.monotonic()
        result = engine.answer(req, snapshot, t0 + (req.timeout_s or setup.timeout_s))
        result.latency_s = time.monotonic() - t0
        return result

    mapping = {k: v for k, v in stats.items() if k != "memory"}
    return Answerer(ask, snapshot.instances, snapshot, mapping, timeline.samples)


# ---------------------------------------------------------------------------------------------
# Live
# ---------------------------------------------------------------------------------------------


def node_parameters(setup: EvalSetup, bag_info: dict[str, Any]) -> dict[str, Any]:
    """The ``scene-vlm run --set`` values that make the node see what offline mapping sees."""
    from ..ros.params import PARAMETERS

    params: dict[str, Any] = {
        "camera_extrinsic": bag_info["extrinsic"], "map_frame": bag_info["world_frame"],
        "model.backend": setup.backend, "query.timeout_s": float(setup.timeout_s),
        "topics.qos_depth": 200, "publish.bev_period_s": 0.0, "publish.cloud_period_s": 0.0,
        "publish.objects_period_s": 0.0, "publish.diagnostics_period_s": 0.5,
        "use_instance_mask": bool(setup.use_mask), "mapping.max_rate_hz": mapping_rate_hz(setup),
    }
    topic_params = {"color": "topics.color", "depth": "topics.depth", "camera_info": "topics.camera_info",
                    "odom": "topics.odom", "instances": "topics.instance_mask",
                    "instance_labels": "topics.instance_labels"}
    for name, topic in setup.topics.items():
        if name in topic_params:
            params[topic_params[name]] = topic
    if setup.backend == "transformers":
        params.update({"model.path": str(setup.model_path), "model.device": setup.device})
    elif setup.backend == "openai":
        params.update({"model.base_url": setup.base_url, "model.name": setup.model or "default"})
    if "query.prompt_profile" in PARAMETERS:
        params["query.prompt_profile"] = setup.prompt_profile
    elif setup.prompt_profile != "default":
        raise EvalInputError("this node has no query.prompt_profile parameter yet; --live needs "
                             "--prompt-profile default")
    if setup.n_frames is not None:
        params["query.n_frames"] = int(setup.n_frames)
    return params


def bag_calibration(source: Path, topics: dict[str, str]) -> dict[str, Any]:
    """The bag's camera extrinsic (as the node's ``camera_extrinsic``), world frame and image count."""
    import numpy as np

    from ..bag.reader import BagTopics, read_bag, read_bag_info
    from ..core.geometry import matrix_to_quat_xyzw

    bt = BagTopics(**topics)
    first = next(iter(read_bag(source, bt)), None)
    if first is None:
        raise EvalInputError(f"{source}: no synchronised colour + depth + pose frame; check --topics")
    T = np.asarray(first.T_base_camera_optical, dtype=np.float64)
    info = read_bag_info(source)
    n_images = info.topics[bt.color].count if bt.color in info.topics else None
    return {"extrinsic": [float(v) for v in (*T[:3, 3], *matrix_to_quat_xyzw(T[:3, :3]))],
            "world_frame": first.world_frame_id or "odom", "n_images": n_images, "color_topic": bt.color,
            "mask_topic": bt.instances,
            # every synchronised stream: a frame whose mask partner was published before the node's
            # mask subscription matched is dropped as a sync miss
            "wait_topics": [t for t in (bt.color, bt.depth, bt.odom, bt.camera_info, bt.instances)
                            if t in info.topics]}


def _start_node_process(params: dict[str, Any], log_path: Path) -> subprocess.Popen:
    import yaml

    cmd = [sys.executable, "-m", "scene_vlm_ros.cli", "run"]
    for k, v in params.items():
        cmd += ["--set", f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"]
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed with the process)
    logger.info("starting the node: %s", " ".join(cmd))
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _instance_from_box(box: Any) -> Instance:
    import numpy as np

    from ..ros.conversions import box_to_oriented_box

    ob = box_to_oriented_box(box)
    lo, hi = ob.aabb()
    return Instance(int(box.instance_id), str(box.label), float(box.score), ob, lo, hi,
                    np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))


def live_answerer(setup: EvalSetup, out: Path, bar: _Progress) -> Answerer:
    """Start (or attach to) a node, replay the bag onto it, and ask through /scene_query."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from scene_vlm_interfaces.srv import ListObjects, SaveMemory, SceneQuery

    from ..paths import use_fastdds_profile
    from ..ros.replay_node import BagReplayer

    # The replayer here publishes the images: its shared-memory segment must hold camera-rate
    # frames (the node process inherits the same profile through the environment).
    use_fastdds_profile()
    info = bag_calibration(setup.source, setup.topics)
    # The node saves its memory only inside memory.root_dir: the run's directory, memory "memory".
    proc = None if setup.attach else _start_node_process(
        {**node_parameters(setup, info), "memory.root_dir": str(out.resolve())}, out / "node.log")
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    client_node = rclpy.create_node("scene_vlm_eval_client", context=ctx)
    executor.add_node(client_node)
    timeline: list[tuple[float, int]] = []
    last_diagnostics: dict[str, str] = {}
    t0 = time.monotonic()

    def on_diagnostics(msg: Any) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "frames_integrated" in values:
                timeline.append((time.monotonic() - t0, int(values["frames_integrated"])))
                last_diagnostics.clear()
                last_diagnostics.update(values)

    from diagnostic_msgs.msg import DiagnosticArray

    client_node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    query_client = client_node.create_client(SceneQuery, "/scene_query")
    list_client = client_node.create_client(ListObjects, f"/{setup.node_name}/list_objects")
    save_client = client_node.create_client(SaveMemory, f"/{setup.node_name}/save_memory")
    spin = threading.Thread(target=executor.spin, name="eval-client-spin", daemon=True)
    spin.start()
    replayer: Optional[BagReplayer] = None

    def close() -> None:
        if replayer is not None:
            replayer.stop()
        executor.shutdown(timeout_sec=2.0)
        client_node.destroy_node()
        if replayer is not None:
            replayer.destroy_node()
        rclpy.shutdown(context=ctx)
        if proc is not None:
            _stop_process(proc)

    def call(client: Any, request: Any, timeout_s: float) -> Any:
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() > deadline:
                client.remove_pending_request(future)
                return None
            time.sleep(0.005)
        return future.result()

    try:
        if not query_client.wait_for_service(timeout_sec=120.0):
            tail = (out / "node.log").read_text(errors="replace")[-2000:] if proc is not None else ""
            raise EvalInputError(f"/scene_query did not appear within 120 s (node log: {tail})")
        replayer = BagReplayer(setup.source, rate=setup.rate, context=ctx, node_name="scene_vlm_eval_replay")
        replayer.prepare()
        executor.add_node(replayer)
        wait = info["wait_topics"] if setup.use_mask else [t for t in info["wait_topics"] if t != info["mask_topic"]]
        if not replayer.wait_for_subscribers(wait, timeout_s=30.0):
            logger.warning("no subscriber on %s after 30 s; replaying anyway", wait)
        time.sleep(0.5)  # discovery is two-sided: give the node's readers time to match the writers too
        bar.start("replaying onto the node", info["n_images"])
        t_play = time.monotonic()
        replayer.play(on_message=lambda topic, _stamp: bar.advance() if topic == info["color_topic"] else None)
        play_s = time.monotonic() - t_play
        n_integrated = _settle(list_client, call, ListObjects)
        listing = call(list_client, ListObjects.Request(), 10.0)
        instances = [_instance_from_box(b) for b in listing.objects] if listing is not None else []
    except BaseException:
        close()
        raise

    def ask(req: QueryRequest) -> QueryResult:
        msg = SceneQuery.Request()
        msg.question, msg.object_id, msg.timeout_s = req.question, int(req.object_id), float(req.timeout_s)
        msg.task = ["auto", "grounding", "multi_grounding", "qa", "caption", "spatial"].index(req.task.value)
        t_call = time.monotonic()
        resp = call(query_client, msg, (req.timeout_s or setup.timeout_s) + 10.0)
        if resp is None:
            return QueryResult(ErrorCode.TIMEOUT, "no response from /scene_query (client-side deadline)",
                               latency_s=time.monotonic() - t_call)
        return QueryResult(error_code_of(int(resp.error_code)), resp.error_msg, resp.answer,
                           [_instance_from_box(b) for b in resp.boxes], latency_s=float(resp.latency_s))

    snapshot = _saved_snapshot(save_client, call, SaveMemory, out / "memory")
    mapping = {"frames_integrated": n_integrated, "replay_s": play_s, "replay_rate": setup.rate,
               "published": dict(replayer.published), "skipped_topics": dict(replayer.skipped_topics),
               "node": "attached" if setup.attach else "started (see node.log)",
               # drops and rejections by reason, queue depths: what the score includes in live mode
               "node_diagnostics": {k: v for k, v in last_diagnostics.items()
                                    if k.startswith(("dropped", "rejected", "bad_message", "frames", "rate"))}}
    return Answerer(ask, instances, snapshot, mapping, timeline, close)


def error_code_of(code: int) -> ErrorCode:
    """The engine's ErrorCode of a service code (codes this client does not know become MODEL_ERROR)."""
    try:
        return ErrorCode(code)
    except ValueError:
        logger.warning("unknown /scene_query error code %d counted as MODEL_ERROR", code)
        return ErrorCode.MODEL_ERROR


def _settle(list_client: Any, call: Callable, srv: Any, quiet_s: float = 2.0, timeout_s: float = 120.0) -> int:
    """Wait until the node's frame count stops growing (the mapping queue has drained)."""
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        resp = call(list_client, srv.Request(), 10.0)
        n = int(resp.n_frames_integrated) if resp is not None else last
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # one map refresh period (mapping.refresh_period_s): queries see every frame
    return last


def _saved_snapshot(save_client: Any, call: Callable, srv: Any, directory: Path) -> Optional[SceneSnapshot]:
    """The node's memory saved through /save_memory and loaded here for the report (None on failure)."""
    import re

    from ..core.memory import SceneMemory

    req = srv.Request()
    req.directory = directory.name  # a name inside the node's memory.root_dir (an attached node: its own root)
    resp = call(save_client, req, 60.0)
    if resp is None or not resp.success:
        logger.warning("the node did not save its memory (%s); the report has no scene pictures",
                       getattr(resp, "message", "no response"))
        return None
    saved = re.search(r" to (/.+)$", resp.message)  # "saved 'NAME' to /abs/dir": an attached node's own root
    directory = Path(saved.group(1)) if saved else directory
    try:
        return SceneMemory.load(directory).snapshot(refresh=True)
    except Exception as exc:  # a memory we cannot read only costs the report its pictures
        logger.warning("could not load the node's saved memory from %s: %s", directory, exc)
        return None


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run_eval(setup: EvalSetup) -> dict[str, Any]:
    """Evaluate and write DIR/metrics.json, answers.jsonl, report.html; returns the metrics dict.

    Raises:
        EvalInputError: unusable source, query file, topics or backend (nothing is written).
    """
    from ..eval.mapping_metrics import instance_recall, oracle_ceiling
    from ..eval.report import write_report
    from ..vlm.prompts import get_profile

    kind = source_kind(setup.source)
    if setup.live and kind != "bag":
        raise EvalInputError("--live replays a rosbag onto a node; give a bag (scene-vlm make-bag converts scans)")
    try:
        get_profile(setup.prompt_profile)
    except ValueError as exc:
        raise EvalInputError(str(exc)) from exc
    gt_objects = load_ground_truth(setup, kind)
    scene_id = setup.scene_id or (setup.source.name if kind == "scannet" else None)
    try:
        load: QueryLoad = load_queries(setup.queries, gt_objects, scene_id, setup.benchmark)
    except QueryFileError as exc:
        raise EvalInputError(str(exc)) from exc
    queries = load.queries[: setup.limit] if setup.limit is not None else load.queries
    if not queries:
        raise EvalInputError(f"{setup.queries}: no usable query ({dict(load.rejected)} rejected, "
                             f"{dict(load.skipped)} skipped; first reasons: {load.examples})")
    if load.source_format == "generated" and not gt_objects:
        raise EvalInputError(f"{setup.queries} refers to ground-truth object ids; no ground truth was found "
                             "(pass --gt X.gt.json)")

    out = setup.out
    out.mkdir(parents=True, exist_ok=True)
    backend = None if setup.live else make_loaded_backend(setup)
    bar = _Progress(setup.progress)
    try:
        answerer = live_answerer(setup, out, bar) if setup.live else offline_answerer(setup, backend)
        try:
            bar.start(f"asking {len(queries)} queries", len(queries))
            rows = []
            for q in queries:
                rows.append(answer_query(q, answerer.ask, answerer.instances, setup.timeout_s))
                bar.advance()
        finally:
            answerer.close()
    finally:
        bar.stop()
        if backend is not None:
            backend.unload()

    metrics = aggregate(rows, load)
    metrics.update({
        "source": str(setup.source), "source_kind": kind, "queries": str(setup.queries), "mode":
        "live" if setup.live else "offline", "backend": setup.backend, "prompt_profile": setup.prompt_profile,
        "model_path": str(setup.model_path) if setup.model_path else None, "mapping": answerer.mapping,
        "mapping_timeline": answerer.timeline,
    })
    snap = answerer.snapshot
    if gt_objects and snap is not None:
        metrics["instance_recall"] = {str(k): v for k, v in instance_recall(snap.instances, gt_objects).items()}
        metrics["oracle_ceiling"] = {str(k): v for k, v in oracle_ceiling(snap.instances, gt_objects).items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8")
    with open(out / "answers.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, default=str) + "\n")
    write_report(out / "report.html", metrics, rows, snap, answerer.timeline)
    return metrics


def parse_args(argv: Optional[Sequence[str]] = None) -> EvalSetup:
    """Command-line arguments -> :class:`EvalSetup` (argparse exits 2 on syntax errors)."""
    from ..vlm.prompts import PROMPT_PROFILES

    ap = argparse.ArgumentParser(prog="scene-vlm eval", description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="rosbag2 bag (dir, .mcap, .db3), ScanNet scan or 7-Scenes folder")
    ap.add_argument("--queries", type=Path, default=None,
                    help="query file: a plain list, our X.queries.json or a benchmark annotation file "
                         "(default: X.queries.json beside the bag)")
    ap.add_argument("--out", type=Path, default=Path("out/eval"), help="output directory")
    ap.add_argument("--backend", choices=BACKENDS, default="fallback")
    ap.add_argument("--model-path", type=Path, default=None, help="transformers: local checkpoint directory")
    ap.add_argument("--device", default="auto", help="transformers: auto, cpu, cuda, cuda:N")
    ap.add_argument("--base-url", default="http://127.0.0.1:8000", help="openai: server URL")
    ap.add_argument("--model", default="", help="openai: served model name")
    ap.add_argument("--prompt-profile", default="default",
                    help="; ".join(f"{k}: {p.summary}" for k, p in PROMPT_PROFILES.items()))
    ap.add_argument("--n-frames", type=int, default=None, help="override the profile's frame count")
    ap.add_argument("--topics", action="append", default=[],
                    help="bag topic names, NAME=/topic (NAME: color, depth, camera_info, odom, tf, tf_static, "
                         "instances, instance_labels); repeat or comma-separate")
    ap.add_argument("--gt", type=Path, default=None, help="ground-truth objects (X.gt.json; default: beside the bag)")
    ap.add_argument("--benchmark", default="auto",
                    help="auto, or the benchmark kind of --queries (scan2cap must be named: it reads ScanRefer files)")
    ap.add_argument("--scene-id", default=None, help="benchmark scene to evaluate (default: the scan's folder name)")
    ap.add_argument("--live", action="store_true", help="replay onto a node's topics and ask through /scene_query")
    ap.add_argument("--attach", action="store_true", help="--live: use the node already running (do not start one)")
    ap.add_argument("--node-name", default="scene_vlm", help="--live: the node's name (its private services)")
    ap.add_argument("--rate", type=float, default=1.0, help="--live replay rate (1.0 = recorded timing)")
    ap.add_argument("--max-rate-hz", type=float, default=None,
                    help="integration-rate policy, frames/s of sensor time (default: the node's mapping.max_rate_hz; "
                         "0 = every frame)")
    ap.add_argument("--timeout-s", type=float, default=60.0, help="per-query deadline (s)")
    ap.add_argument("--max-frames", type=int, default=None, help="offline: map only the first N frames")
    ap.add_argument("--no-mask", action="store_true", help="ignore a recorded instance mask")
    ap.add_argument("--limit", type=int, default=None, help="ask only the first N usable queries")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    queries = a.queries
    if queries is None:
        queries = sidecar(a.source, ".queries.json")
        if not queries.is_file():
            raise EvalInputError(f"no --queries given and {queries.name} is not beside {a.source}")
    if a.rate < 0 or a.timeout_s <= 0 or (a.n_frames is not None and a.n_frames < 0):
        raise EvalInputError("--rate must be >= 0, --timeout-s > 0 and --n-frames >= 0")
    return EvalSetup(
        source=a.source, queries=queries, out=a.out, backend=a.backend, model_path=a.model_path,
        base_url=a.base_url, model=a.model, device=a.device, prompt_profile=a.prompt_profile, n_frames=a.n_frames,
        topics=parse_topics(a.topics), gt=a.gt, benchmark=a.benchmark, scene_id=a.scene_id, live=a.live,
        attach=a.attach, rate=a.rate, timeout_s=a.timeout_s, max_frames=a.max_frames, use_mask=not a.no_mask,
        limit=a.limit, progress=not a.no_progress, node_name=a.node_name,
        max_rate_hz=a.max_rate_hz,
    )


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """A few human lines: each task's headline scores and the counts."""
    lines = []
    for task, m in metrics["tasks"].items():
        scores = ", ".join(f"{k} {v:.3f}" for k, v in m["overall"].items() if k != "n")
        lines.append(f"{task} (n={int(m['overall']['n'])}): {scores}")
    c = metrics["counts"]
    lines.append(f"asked {c['asked']}, rejected {c['rejected']} {metrics['rejected'] or ''}, skipped {c['skipped']}; "
                 f"error codes {metrics['error_codes']}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry; returns the exit status (0 evaluated, 2 unusable input)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        setup = parse_args(argv)
        metrics = run_eval(setup)
    except EvalInputError as exc:
        print(f"scene-vlm eval: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(metrics):
        print(line)
    print(f"wrote {setup.out / 'metrics.json'}, answers.jsonl and report.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
