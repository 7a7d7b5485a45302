"""The scene_vlm node: maps from RGB-D + odometry topics and answers ``/scene_query``.

Thin glue around the core's one ingest path: subscription callbacks hand their messages to
:class:`~scene_vlm_ros.core.pipeline.FramePipeline` (decode, sync, pose; the same code
``scene-vlm map`` runs on a bag) and its posed frames to the
:class:`~scene_vlm_ros.core.mapping_worker.MappingWorker` (bounded queue, rate and refresh policy,
its own thread). Concurrency:

- image subscriptions are *raw*: the callback gets the serialized bytes and the core parses the
  CDR with numpy (no Python message object for a megabyte image), then feeds the pipeline under a
  lock; input callbacks are reentrant so one busy stream never starves another;
- ``/scene_query`` is an ``async`` callback in a reentrant group: it takes a snapshot, hands the
  request to the bounded :class:`QueryWorker` and awaits the result without holding an executor
  thread, so mapping never waits for the model and many requests can be in flight;
- publishers of the BEV, markers, cloud and diagnostics run on timers in a third group.

It is a lifecycle node: the model is loaded in ``on_configure`` (a load failure is reported as
MODEL_UNAVAILABLE on every query, the node keeps mapping), subscriptions start in ``on_activate``.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from scene_vlm_interfaces.action import SceneQuery as SceneQueryAction
from scene_vlm_interfaces.msg import InstanceLabelArray
from scene_vlm_interfaces.srv import ListObjects, LoadMemory, SaveMemory, SceneQuery

from ..core import decode
from ..core.geometry import make_transform, quat_xyzw_to_matrix
from ..core.mapping_worker import MappingWorker, MappingWorkerConfig
from ..core.memory_paths import MemoryPathError, resolve_memory_dir
from ..core.pipeline import FramePipeline, PipelineConfig, feed_health
from ..vlm.engine import ErrorCode, QueryEngine, QueryRequest, QueryResult, QueryWorker, validate_request
from ..vlm.types import ModelUnavailableError, Task, VLMBackend
from . import conversions as conv
from .log_bridge import install_log_bridge
from .params import PARAMETERS, NodeConfig, validate_value
from .query_action import FinishedJob, QueryActionServer, QueryJob, WorkerQueryJob
from .tf_poses import TfCameraPoses, make_camera_poses
from .vision_out import VisionOutputs

NODE_NAME = "scene_vlm"

#: Parameters a running node applies at once (to the next query, the next timer tick); every other
#: parameter is read in on_configure, so changing it while configured is refused with the transitions
#: that make it take effect.
RUNTIME_PARAMETERS = frozenset({
    "query.timeout_s", "query.prompt_profile", "query.n_frames", "query.image_size_px", "query.max_question_chars",
    "publish.bev_period_s", "publish.objects_period_s", "publish.cloud_period_s", "publish.cloud_max_points",
    "publish.diagnostics_period_s", "diagnostics.stale_warn_s", "diagnostics.stale_error_s", "autostart",
    "memory.root_dir",
})

#: QoS of /scene_query (clients sending bursts should use it too: the default keeps only 10).
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


def _descriptor(name: str) -> ParameterDescriptor:
    default, desc, rng, choices = PARAMETERS[name]
    d = ParameterDescriptor(name=name, description=desc + (f" One of {list(choices)}." if choices else ""))
    if rng is not None and isinstance(default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(rng[0]), to_value=float(rng[1]))]
    elif rng is not None and isinstance(default, int) and not isinstance(default, bool):
        d.integer_range = [IntegerRange(from_value=int(rng[0]), to_value=int(rng[1]), step=1)]
    return d


def memory_config_from(cfg: NodeConfig) -> Any:
    """Build the core's MemoryConfig from node parameters."""
    from ..core.memory import MemoryConfig

    kwargs = dict(
        voxel_size_m=cfg["mapping.voxel_size_m"],
        depth_min_m=cfg["mapping.depth_min_m"],
        depth_max_m=cfg["mapping.depth_max_m"],
        device=cfg["mapping.device"],
        clear_radius_m=cfg["mapping.clear_radius_m"],
        frame_id=cfg["map_frame"],
    )
    detector = resolve_detector_dir(cfg["mapping.detector_dir"])
    if detector is not None:
        kwargs["detector_model_dir"] = str(detector)
        kwargs["use_detector"] = True
        # A live robot: when the detector thread is behind, skip keyframes rather than queue them.
        kwargs["detector_drop_when_busy"] = True
    return MemoryConfig(**kwargs)


def resolve_detector_dir(value: str) -> Optional[Path]:
    """``mapping.detector_dir``: "auto" -> the best detector present (or None), "" / "none" -> None, else the
    directory as given (a missing or corrupt one is reported by the memory at configure time)."""
    if value in ("", "none"):
        return None
    if value == "auto":
        from ..core.detector import find_best_detector

        choice = find_best_detector()
        return None if choice is None else Path(choice.model_dir)
    return Path(value).expanduser()


def prompt_settings_from(cfg: NodeConfig) -> tuple[str, Optional[int], Optional[int], str]:
    """``(profile, n_frames or None, image_size_px or None, warning)`` the node prompts with: explicit
    parameters win; ``auto`` / 0 take what a model exported by `scene-vlm-train export` says it was
    trained with (``scene_vlm_export.json`` in ``model.path``), else the profile's own values. The
    warning (or "") says when the installed templates differ from the ones the model was trained on."""
    from ..vlm.prompts import export_prompt_settings, prompt_version

    export, warning = None, ""
    if cfg["model.backend"] == "transformers":
        try:
            export = export_prompt_settings(cfg["model.path"])
        except ValueError as exc:
            warning = str(exc)
    profile = cfg["query.prompt_profile"]
    if profile == "auto":
        profile = export["prompt_profile"] if export else "default"
    n_frames = cfg["query.n_frames"] or (export["n_frames"] if export else None)
    image_size = cfg["query.image_size_px"] or (export["image_size_px"] if export else None)
    if export and export["prompt_version"] and export["prompt_version"] != prompt_version(profile):
        warning = (f"the model was trained with prompt {export['prompt_version']} but the node prompts with "
                   f"{prompt_version(profile)}: answers may suffer (set query.prompt_profile to match)")
    return profile, n_frames, image_size, warning


def make_backend_from(cfg: NodeConfig, image_size_px: Optional[int] = None) -> VLMBackend:
    """Create (not load) the configured backend; raises ModelUnavailableError for bad settings."""
    from ..vlm.backends.factory import make_backend

    kind = cfg["model.backend"]
    if kind == "none":
        raise ModelUnavailableError("model.backend is 'none': no model configured")
    if kind == "transformers":
        if not cfg["model.path"]:
            raise ModelUnavailableError("model.backend is 'transformers' but model.path is empty")
        return make_backend(
            "transformers", model_path=cfg["model.path"], device=cfg["model.device"], dtype=cfg["model.dtype"],
            load_in_4bit=cfg["model.load_in_4bit"], max_new_tokens=cfg["model.max_new_tokens"],
            max_image_side_px=image_size_px or cfg["query.image_size_px"] or None,
        )
    if kind == "openai":
        return make_backend(
            "openai", base_url=cfg["model.base_url"], model=cfg["model.name"],
            api_key=os.environ.get(cfg["model.api_key_env"]) or None, timeout_s=cfg["query.timeout_s"],
        )
    return make_backend(kind)


class SceneVlmNode(LifecycleNode):
    """Lifecycle node serving ``/scene_query`` from a live scene memory (see module docstring)."""

    def __init__(
        self,
        node_name: str = NODE_NAME,
        *,
        context: Optional[rclpy.context.Context] = None,
        parameter_overrides: Optional[list[rclpy.parameter.Parameter]] = None,
        backend: Optional[VLMBackend] = None,
        **kwargs: Any,
    ):
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides or [], **kwargs)
        for name, (default, _desc, _rng, _choices) in PARAMETERS.items():
            self.declare_parameter(name, default, _descriptor(name))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._backend_injected = backend

        # Each input subscription has a mutually exclusive group of its own: streams never starve
        # each other (one group for all served them in creation order), and at most one message per
        # topic is in the executor at a time, so the backlog stays in the subscription's bounded
        # KEEP_LAST queue. (With a reentrant group the executor took every message off DDS into its
        # thread pool's unbounded queue and rescanned that list on every spin: under load the spin
        # loop held the GIL and the node fell further behind.)
        self._pipeline_lock = threading.Lock()
        self._memory_group = MutuallyExclusiveCallbackGroup()
        self._query_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()

        self.cfg = NodeConfig()
        self.memory: Any = None
        self.pipeline: Optional[FramePipeline] = None
        self.mapper: Optional[MappingWorker] = None
        self.worker: Optional[QueryWorker] = None
        self.backend: Optional[VLMBackend] = None
        self.backend_error = "the node is not configured yet"
        self._subs: list[Any] = []
        self._ingest: Optional[tuple[Any, Any, threading.Thread]] = None
        self._timers: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._t_activated = 0.0
        self._tf_poses: Optional[TfCameraPoses] = None
        self._active = False
        self._vision: Optional[VisionOutputs] = None
        # core/ and vlm/ log through Python logging: forward them to this node's logger (/rosout).
        self._log_bridge = install_log_bridge(self.get_logger(), exclusive=False)
        self._mask_checked = False

        # Services exist from construction on, so a client always gets an answer with a reason
        # (NO_MAP_YET before configure/activate), never a silent wait.
        # KEEP_ALL: a burst of requests larger than the default depth of 10 must reach the callback
        # (and get SUCCESS or BUSY) instead of being overwritten in the DDS history.
        self.create_service(SceneQuery, "scene_query", self._on_scene_query, qos_profile=SERVICE_QOS,
                            callback_group=self._query_group)
        self.create_service(ListObjects, "~/list_objects", self._on_list_objects, callback_group=self._query_group)
        self.create_service(SaveMemory, "~/save_memory", self._on_save_memory, callback_group=self._memory_group)
        self.create_service(LoadMemory, "~/load_memory", self._on_load_memory, callback_group=self._memory_group)
        # The same query as an action: feedback while the model works, and cancel.
        self._query_action = QueryActionServer(self, self._start_query_job)

    # -- parameters ------------------------------------------------------------------------------
    def _on_set_parameters(self, params: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        """Validate; while configured, apply the :data:`RUNTIME_PARAMETERS` at once and refuse the
        others with the lifecycle transitions that would make them take effect."""
        configured = self.worker is not None
        for p in params:
            if p.name not in PARAMETERS:
                continue
            reason = validate_value(p.name, p.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if configured and p.name not in RUNTIME_PARAMETERS and p.value != self.cfg[p.name]:
                return SetParametersResult(successful=False, reason=(
                    f"{p.name} is read when the node is configured: deactivate and clean up the node (lifecycle "
                    f"transitions 'deactivate' then 'cleanup'), set it, then 'configure' and 'activate' again"))
        if configured:
            self._apply_runtime({p.name: p.value for p in params if p.name in RUNTIME_PARAMETERS})
        return SetParametersResult(successful=True)

    def _apply_runtime(self, changes: dict[str, Any]) -> None:
        """Make run-time parameter changes take effect: the query worker and engine read them for
        the next query, timers are re-created with their new periods."""
        if not changes:
            return
        self.cfg.values.update(changes)
        worker = self.worker
        if worker is not None:
            from ..vlm.prompts import get_profile

            profile, n_frames, image_size, _warning = prompt_settings_from(self.cfg)
            worker.default_timeout_s = float(self.cfg["query.timeout_s"])
            worker.engine.profile = get_profile(profile)
            worker.engine.n_frames = n_frames or worker.engine.profile.n_frames
            worker.engine.image_size_px = image_size or worker.engine.profile.image_size_px
        if any(name.startswith("publish.") and name.endswith("_period_s") for name in changes) and self._active:
            self._start_timers()
        self.get_logger().info("applied at run time: " + ", ".join(f"{k}={v}" for k, v in sorted(changes.items())))

    def _read_config(self) -> NodeConfig:
        cfg = NodeConfig()
        for name in PARAMETERS:
            cfg.values[name] = self.get_parameter(name).value
        return cfg

    # -- lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.cfg = cfg = self._read_config()
        for name, value in cfg.values.items():
            reason = validate_value(name, value)
            if reason:
                self.get_logger().error(f"configure failed: {reason}")
                return TransitionCallbackReturn.FAILURE
        try:
            from ..core.memory import SceneMemory

            self.memory = SceneMemory(memory_config_from(cfg))
        except Exception as exc:  # invalid mapping settings: the node cannot do its job
            self.get_logger().error(f"configure failed: scene memory: {exc}")
            return TransitionCallbackReturn.FAILURE
        ext = np.asarray(cfg["camera_extrinsic"], dtype=np.float64)
        T_base_camera = make_transform(quat_xyzw_to_matrix(ext[3:]), ext[:3])
        try:
            self._tf_poses = make_camera_poses(self, cfg["map_frame"], cfg["pose_source"], logger=self.get_logger())
        except ValueError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        if self._tf_poses is None and cfg["map_frame"] not in ("odom", ""):
            self.get_logger().warning(
                f"map_frame is '{cfg['map_frame']}' but poses come from odometry: the map is in the odometry "
                "frame; boxes are labelled with map_frame only")
        self.pipeline = FramePipeline(
            T_base_camera,
            PipelineConfig(
                slop_s=cfg["sync.slop_s"], queue_size=cfg["sync.queue_size"],
                pose_max_wait_s=cfg["sync.pose_max_wait_s"], pending_max=cfg["sync.pose_queue_size"],
                use_instance_mask=cfg["use_instance_mask"],
            ),
            camera_pose=self._tf_poses.camera_pose if self._tf_poses is not None else None,
        )
        self.mapper = MappingWorker(self.memory, MappingWorkerConfig(
            queue_size=cfg["sync.mapping_queue_size"], max_rate_hz=cfg["mapping.max_rate_hz"],
            refresh_period_s=cfg["mapping.refresh_period_s"]))
        profile, n_frames, image_size, prompt_warning = prompt_settings_from(cfg)
        if prompt_warning:
            self.get_logger().warning(prompt_warning)
        self._load_backend(cfg, image_size)
        engine = QueryEngine(
            self.backend, self.backend_error, n_frames=n_frames, image_size_px=image_size,
            max_new_tokens=cfg["model.max_new_tokens"], prompt_profile=profile,
        )
        self.worker = QueryWorker(engine, queue_size=cfg["query.queue_size"], default_timeout_s=cfg["query.timeout_s"])
        self._pubs = {
            "bev": self.create_publisher(Image, "~/bev_image", 1),
            "objects": self.create_publisher(MarkerArray, "~/objects", 1),
            "cloud": self.create_publisher(PointCloud2, "~/map_cloud", 1),
            "query_result": self.create_publisher(MarkerArray, "~/query_result", 1),
            "diagnostics": self.create_publisher(DiagnosticArray, "/diagnostics", 10),
        }
        self._vision = VisionOutputs(self)
        detector = self.memory.detector_name or (f"none ({self.memory.detector_error})" if self.memory.detector_error
                                                 else "none")
        self.get_logger().info(
            f"configured: map frame '{cfg['map_frame']}', voxel {cfg['mapping.voxel_size_m']} m, detector {detector}, "
            f"model backend '{cfg['model.backend']}' ({'ready' if self.backend else self.backend_error}), "
            f"prompt profile '{engine.profile.name}' ({engine.n_frames} frames, {engine.image_size_px} px)"
        )
        return TransitionCallbackReturn.SUCCESS

    def _load_backend(self, cfg: NodeConfig, image_size_px: Optional[int] = None) -> None:
        self.backend, self.backend_error = None, ""
        try:
            backend = self._backend_injected or make_backend_from(cfg, image_size_px)
            backend.load()
            self.backend = backend
        except ModelUnavailableError as exc:
            self.backend_error = f"model unavailable: {exc}"
            self.get_logger().error(f"{self.backend_error} (queries will answer MODEL_UNAVAILABLE; mapping runs)")
        except Exception as exc:  # a corrupt checkpoint can raise anything; the node must survive it
            self.backend_error = f"model failed to load: {type(exc).__name__}: {exc}"
            self.get_logger().error(f"{self.backend_error} (queries will answer MODEL_UNAVAILABLE; mapping runs)")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.cfg
        qos = QoSProfile(
            depth=cfg["topics.qos_depth"], history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE if cfg["topics.reliable"] else ReliabilityPolicy.BEST_EFFORT,
            durability=qos_profile_sensor_data.durability,
        )
        def g() -> MutuallyExclusiveCallbackGroup:
            return MutuallyExclusiveCallbackGroup()

        # The inputs live on a small node of their own with its own executor thread: each spin of
        # rclpy's Python executor rebuilds a wait set of every entity of its nodes (services, action,
        # timers, TF, publishers...), and at camera rate that cost on the main executor left image
        # messages to overflow their queues. This node has only the input subscriptions.
        ingest = self._start_ingest_node()
        # Creation order matters: rclpy serves ready subscriptions in this order, so the small,
        # cheap messages every frame depends on (odometry, camera info, labels) come first and are
        # never stuck behind a backlog of images.
        self._subs = []
        if cfg["topics.odom"]:
            self._subs.append(ingest.create_subscription(
                Odometry, cfg["topics.odom"], lambda m: self._feed("odom", m), QoSProfile(depth=100),
                callback_group=g()))
        self._subs.append(ingest.create_subscription(
            CameraInfo, cfg["topics.camera_info"], lambda m: self._feed("camera_info", m), qos, callback_group=g()))
        self._subscribe_tf(ingest, g())
        if cfg["use_instance_mask"]:
            self._subs.append(ingest.create_subscription(
                InstanceLabelArray, cfg["topics.instance_labels"], lambda m: self._feed("labels", m),
                QoSProfile(depth=10), callback_group=g()))
        streams = [("depth", cfg["topics.depth"]), ("color", cfg["topics.color"])]
        if cfg["use_instance_mask"]:
            streams.append(("mask", cfg["topics.instance_mask"]))
        for stream, topic in streams:
            compressed = topic.endswith(("/compressed", "/compressedDepth"))
            self._subs.append(ingest.create_subscription(
                CompressedImage if compressed else Image, topic,
                (lambda raw, s=stream, c=compressed: self._feed_raw_image(s, raw, c)), qos,
                callback_group=g(), raw=True))
        self._start_timers()
        self._active = True
        self._t_activated = time.monotonic()
        # Everything allocated so far (modules, typestores, the model) lives as long as the node:
        # move it out of the cyclic GC's reach, so full collections stay short and do not stall
        # the mapping thread while they hold the GIL.
        gc.collect()
        gc.freeze()
        self._mask_checked = False
        self.mapper.start()
        self.get_logger().info(
            f"active: listening on {cfg['topics.color']}, {cfg['topics.depth']}, {cfg['topics.camera_info']}, "
            f"{cfg['topics.odom']}" + (f", {cfg['topics.instance_mask']}" if cfg["use_instance_mask"] else "")
        )
        return super().on_activate(state)

    def _start_timers(self) -> None:
        """(Re)create the output timers with the current periods (0 = off)."""
        for t in self._timers:
            self.destroy_timer(t)
        periods = {
            "publish.bev_period_s": self._publish_bev,
            "publish.objects_period_s": self._publish_objects,
            "publish.cloud_period_s": self._publish_cloud,
            "publish.diagnostics_period_s": self._publish_diagnostics,
        }
        self._timers = [
            self.create_timer(self.cfg[name], cb, callback_group=self._timer_group)
            for name, cb in periods.items() if self.cfg[name] > 0
        ]

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_ingest_node()
        for t in self._timers:
            self.destroy_timer(t)
        self._subs, self._timers = [], []
        self._active = False
        if self.mapper is not None:
            self.mapper.stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._log_bridge.remove()
        super().destroy_node()

    def _release(self) -> None:
        self._stop_ingest_node()
        if self.mapper is not None:
            self.mapper.stop()
        if self.memory is not None and hasattr(self.memory, "close"):
            self.memory.close()  # ends its detector thread
        if self.worker is not None:
            self.worker.shutdown()
        if self.backend is not None:
            self.backend.unload()
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        if self._vision is not None:
            self._vision.destroy(self)
        if self._tf_poses is not None:
            self._tf_poses.close()
        self._vision, self._tf_poses = None, None
        self.worker, self.backend, self.memory, self.pipeline, self._pubs = None, None, None, None, {}
        self.mapper = None
        self.backend_error = "the node is not configured"

    # -- mapping callbacks -----------------------------------------------------------------------
    def _start_ingest_node(self) -> Any:
        """``<name>_ingest``: the input subscriptions, spun by a single-threaded executor of its own."""
        from rclpy.executors import SingleThreadedExecutor

        node = rclpy.create_node(f"{self.get_name()}_ingest", namespace=self.get_namespace(), context=self.context)
        # In TF mode a frame's pose can become known without any message through the pipeline (the
        # transform lands in the tf2 buffer): look again at 20 Hz.
        node.create_timer(0.05, self._poll_pipeline, callback_group=MutuallyExclusiveCallbackGroup())
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(target=self._spin_ingest, args=(executor,), name="scene-vlm-ingest", daemon=True)
        self._ingest = (node, executor, thread)
        thread.start()
        return node

    @staticmethod
    def _spin_ingest(executor: Any) -> None:
        try:
            executor.spin()
        except Exception:  # the context shut down (Ctrl-C): the node is going away anyway
            pass

    def _stop_ingest_node(self) -> None:
        if self._ingest is None:
            return
        node, executor, thread = self._ingest
        self._ingest = None
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=5.0)
        for sub in self._subs:
            node.destroy_subscription(sub)
        self._subs = []
        node.destroy_node()

    def _subscribe_tf(self, node: Any, group: Any) -> None:
        """/tf_static (the camera extrinsic from the robot's URDF) and, without odometry, /tf
        (``odom -> base_link`` from a SLAM stack), when tf2_msgs is importable."""
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self.get_logger().info("tf2_msgs is not importable: camera extrinsic from the camera_extrinsic parameter")
            return
        from rclpy.qos import DurabilityPolicy

        latched = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self._subs.append(node.create_subscription(
            TFMessage, "/tf_static", lambda m: self._feed("tf_static", m), latched, callback_group=group))
        if not self.cfg["topics.odom"] and self._tf_poses is None:
            self._subs.append(node.create_subscription(
                TFMessage, "/tf", lambda m: self._feed("tf", m), QoSProfile(depth=100), callback_group=group))

    def _through_pipeline(self, step: Any) -> None:
        """Run ``step(pipeline)`` under the pipeline lock; the frames it releases go to the mapping worker."""
        pipeline, mapper = self.pipeline, self.mapper
        if pipeline is None or mapper is None:
            return
        with self._pipeline_lock:
            frames = step(pipeline)
        mapper.submit(frames)

    def _feed(self, stream: str, msg: Any) -> None:
        """Hand one message to the core's pipeline; posed frames go to the mapping worker."""
        self._through_pipeline(lambda p: p.on_message(stream, msg))

    def _poll_pipeline(self) -> None:
        self._through_pipeline(lambda p: p.poll())

    def _feed_raw_image(self, stream: str, raw: bytes, compressed: bool) -> None:
        if stream == "depth" and not self._mask_checked and self.pipeline is not None:
            # A mask publisher exists: make frames wait for their masks from the very first one
            # (else the first frames fuse as geometry-only instances).
            self._mask_checked = True
            if self.cfg["use_instance_mask"] and self.count_publishers(self.cfg["topics.instance_mask"]) > 0:
                self._through_pipeline(lambda p: p.require_mask())
        try:
            msg = decode.parse_compressed_image_cdr(raw) if compressed else decode.parse_image_cdr(raw)
        except decode.MessageConversionError as exc:
            self._through_pipeline(lambda p, err=exc: p.record_invalid(stream, err))
            return
        self._feed(stream, msg)

    # -- services --------------------------------------------------------------------------------
    def _fill(self, response: Any, result: QueryResult) -> Any:
        """Copy a core result into a SceneQuery service response or action result (same fields)."""
        response.error_code = int(result.error_code)
        response.error_msg = result.error_msg
        response.answer = result.answer
        response.boxes = [conv.instance_to_box(i) for i in result.instances]
        response.header.frame_id = result.frame_id or self.cfg["map_frame"]
        response.header.stamp = conv.s_to_stamp(result.snapshot_stamp_s)
        response.latency_s = float(result.latency_s)
        return response

    def _prepare_query(self, question: str, task_code: int, object_id: int, timeout_s: float,
                       t_arrival: float) -> tuple[Optional[QueryRequest], Any, Optional[QueryResult]]:
        """``(request, snapshot, None)`` for a query the worker should answer, or ``(None, None, result)``
        when it is answered at once (INVALID_REQUEST, NO_MAP_YET)."""
        try:
            task = Task.from_srv(task_code)
        except ValueError as exc:
            return None, None, QueryResult(ErrorCode.INVALID_REQUEST, str(exc))
        req = QueryRequest(question, task, int(object_id), float(timeout_s))
        invalid = validate_request(req, self.cfg["query.max_question_chars"])
        if invalid is not None:
            invalid.latency_s = time.monotonic() - t_arrival
            return None, None, invalid
        memory, worker = self.memory, self.worker
        if memory is None or worker is None:
            return None, None, QueryResult(
                ErrorCode.NO_MAP_YET, "the node is not active yet (lifecycle state: not configured)")
        snapshot = memory.snapshot(allow_stale=True)
        if snapshot.is_empty:
            with self._pipeline_lock:
                waiting = self.pipeline.stats() if self.pipeline else {}
            return None, None, QueryResult(
                ErrorCode.NO_MAP_YET,
                f"no frame has been integrated yet (received so far: {waiting.get('received', {})}; "
                f"check the input topics and {'TF' if self._tf_poses is not None else 'odometry'})",
                frame_id=self.cfg["map_frame"], latency_s=time.monotonic() - t_arrival)
        return req, snapshot, None

    def _busy(self, snapshot: Any, t_arrival: float) -> QueryResult:
        depth = self.worker.queue_depth if self.worker is not None else 0
        return QueryResult(ErrorCode.BUSY, f"{depth} queries are already waiting; try again later",
                           snapshot_stamp_s=snapshot.stamp_s, frame_id=snapshot.frame_id,
                           latency_s=time.monotonic() - t_arrival)

    def _publish_query_outputs(self, result: QueryResult) -> None:
        """~/query_result markers and ~/query_detections for a successful answer."""
        if result.error_code != ErrorCode.SUCCESS:
            return
        stamp = self.get_clock().now().to_msg()
        if "query_result" in self._pubs:
            self._pubs["query_result"].publish(conv.instances_to_markers(
                result.instances, self.cfg["map_frame"], stamp, ns="query_result", alpha=0.6))
        if self._vision is not None:
            header = Header(frame_id=result.frame_id or self.cfg["map_frame"],
                                 stamp=conv.s_to_stamp(result.snapshot_stamp_s))
            self._vision.publish_query_result(header, [conv.instance_to_box(i) for i in result.instances])

    async def _on_scene_query(self, request: SceneQuery.Request, response: SceneQuery.Response) -> Any:
        t_arrival = time.monotonic()
        req, snapshot, early = self._prepare_query(request.question, request.task, request.object_id,
                                                   request.timeout_s, t_arrival)
        if early is not None:
            return self._fill(response, early)
        worker = self.worker
        future: Future = Future(executor=self.executor)
        # A done callback makes set_result() from the worker thread wake the executor, which then
        # resumes this coroutine (rclpy polls awaiting tasks only when woken).
        future.add_done_callback(lambda _f: None)
        if worker is None or not worker.submit(req, snapshot, future.set_result, t_arrival=t_arrival):
            return self._fill(response, self._busy(snapshot, t_arrival))
        result: QueryResult = await future
        self._publish_query_outputs(result)
        return self._fill(response, result)

    def _start_query_job(self, goal: SceneQueryAction.Goal) -> QueryJob:
        """A ~/query goal -> the job the action server waits on (see ros.query_action)."""
        t_arrival = time.monotonic()
        req, snapshot, early = self._prepare_query(goal.question, goal.task, goal.object_id, goal.timeout_s,
                                                   t_arrival)
        if early is not None:
            return FinishedJob(self._fill(SceneQueryAction.Result(), early))

        def to_result(result: QueryResult) -> SceneQueryAction.Result:
            self._publish_query_outputs(result)
            return self._fill(SceneQueryAction.Result(), result)

        return WorkerQueryJob(self.worker, req, snapshot, to_result,
                              lambda: self._fill(SceneQueryAction.Result(), self._busy(snapshot, t_arrival)))

    def _on_list_objects(self, request: ListObjects.Request, response: ListObjects.Response) -> Any:
        response.header.frame_id = self.cfg["map_frame"]
        if self.memory is None:
            return response
        snap = self.memory.snapshot(allow_stale=True)
        flt = request.label_filter.strip().lower()
        response.objects = [conv.instance_to_box(i) for i in snap.instances if flt in i.label.lower()]
        response.header.stamp = conv.s_to_stamp(snap.stamp_s)
        response.n_frames_integrated = int(snap.n_frames_integrated)
        return response

    def _memory_dir(self, name: str) -> Path:
        """The directory of the memory ``name`` inside ``memory.root_dir``; raises MemoryPathError."""
        return resolve_memory_dir(self.cfg["memory.root_dir"], name)

    def _on_save_memory(self, request: SaveMemory.Request, response: SaveMemory.Response) -> Any:
        if self.memory is None:
            response.success, response.message = False, "the node is not configured"
            return response
        try:
            directory = self._memory_dir(request.directory)
        except MemoryPathError as exc:  # refused before anything is created
            self.get_logger().warning(f"~/save_memory refused: {exc}")
            response.success, response.message = False, f"refused: {exc}"
            return response
        try:
            self.memory.save(directory)
            response.success, response.message = True, f"saved '{request.directory.strip()}' to {directory}"
        except Exception as exc:  # disk full, permissions: report, keep the memory
            response.success, response.message = False, f"save failed: {type(exc).__name__}: {exc}"
        return response

    def _on_load_memory(self, request: LoadMemory.Request, response: LoadMemory.Response) -> Any:
        if self.memory is None:
            response.success, response.message = False, "the node is not configured"
            return response
        try:
            directory = self._memory_dir(request.directory)
        except MemoryPathError as exc:
            self.get_logger().warning(f"~/load_memory refused: {exc}")
            response.success, response.message = False, f"refused: {exc}"
            return response
        try:
            from ..core.memory import SceneMemory

            loaded = SceneMemory.load(directory)
        except Exception as exc:  # wrong version, missing files: the current memory stays
            response.success, response.message = False, f"load failed (current memory kept): {exc}"
            return response
        saved_frame, map_frame = loaded.config.frame_id, self.cfg["map_frame"]
        if saved_frame != map_frame:
            response.success, response.message = False, (
                f"load refused (current memory kept): '{request.directory.strip()}' is in frame '{saved_frame}' but "
                f"this node maps in '{map_frame}'; set map_frame to '{saved_frame}' (cleanup, configure) to use it")
            return response
        if self.mapper is not None:
            self.mapper.set_memory(loaded)
        self.memory = loaded
        response.success = True
        response.n_objects = len(loaded.snapshot(allow_stale=True).instances)
        response.message = f"loaded {response.n_objects} objects ({saved_frame}) from {directory}"
        return response

    # -- outputs ---------------------------------------------------------------------------------
    def _publish_bev(self) -> None:
        if self.memory is None or self._pubs.get("bev") is None:
            return
        snap = self.memory.snapshot(allow_stale=True)
        if snap.is_empty or self._pubs["bev"].get_subscription_count() == 0:
            return
        from ..core.bev import render_bev
        from ..core.markers import draw_bev_markers

        image, _ = draw_bev_markers(render_bev(snap), snap)
        self._pubs["bev"].publish(conv.numpy_to_image(image, "rgb8", conv.s_to_stamp(snap.stamp_s),
                                                      self.cfg["map_frame"]))

    def _publish_objects(self) -> None:
        if self.memory is None or "objects" not in self._pubs:
            return
        snap = self.memory.snapshot(allow_stale=True)
        self._pubs["objects"].publish(conv.instances_to_markers(
            snap.instances, self.cfg["map_frame"], conv.s_to_stamp(snap.stamp_s)))
        if self._vision is not None:
            header = Header(frame_id=self.cfg["map_frame"], stamp=conv.s_to_stamp(snap.stamp_s))
            self._vision.publish_instances(header, [conv.instance_to_box(i) for i in snap.instances])

    def _publish_cloud(self) -> None:
        if self.memory is None or self._pubs.get("cloud") is None:
            return
        if self._pubs["cloud"].get_subscription_count() == 0:
            return
        snap = self.memory.snapshot(allow_stale=True)
        pts, cols = snap.points, snap.colors
        limit = self.cfg["publish.cloud_max_points"]
        if len(pts) > limit:
            idx = np.linspace(0, len(pts) - 1, limit).astype(np.int64)
            pts, cols = pts[idx], cols[idx]
        self._pubs["cloud"].publish(conv.points_to_cloud(pts, cols, self.cfg["map_frame"],
                                                         conv.s_to_stamp(snap.stamp_s)))

    def diagnostics(self) -> DiagnosticStatus:
        """One DiagnosticStatus: input rates over the last seconds, feed health, every drop by
        reason, integration time, queues and model state."""
        st = DiagnosticStatus(name=f"{self.get_name()}: scene memory", hardware_id="scene_vlm_ros")
        kv: dict[str, str] = {}
        level, message = DiagnosticStatus.OK, "mapping"
        cfg = self.cfg
        if self.pipeline is not None and self.mapper is not None:
            with self._pipeline_lock:
                ps = self.pipeline.stats()
            ms = self.mapper.stats()
            for k, v in sorted(ps["rates_hz"].items()):
                kv[f"rate_{k}_hz"] = f"{v:.1f}"
            for k, v in sorted(ps["received"].items()):
                kv[f"received_{k}"] = str(v)
            kv["frames_received"] = str(ps["received"].get("depth", 0))
            dropped = dict(ps["dropped"])
            for k, v in ms["dropped"].items():
                dropped[k] = dropped.get(k, 0) + v
            for k, v in sorted(dropped.items()):
                kv[f"dropped_{k}"] = str(v)
            for k, v in ms["rejected"].items():
                kv[f"rejected_{k}"] = str(v)
            kv["frames_integrated"] = str(ms["integrated"])
            kv["frames_skipped_by_rate_policy"] = str(ms["skipped_by_rate_policy"])
            kv["frames_waiting_for_pose"] = str(ps["waiting_for_pose"])
            kv["frames_waiting_for_mapping"] = str(ms["queue"])
            kv["map_refreshed_frames"] = str(ms["refreshed_frames"])
            for name in ("integration_ms_p50", "integration_ms_p95", "refresh_ms_p50"):
                if ms[name] is not None:
                    kv[name if name != "refresh_ms_p50" else "map_refresh_ms_p50"] = f"{ms[name]:.1f}"
            if ps["warnings"]:
                kv["input_warnings"] = " | ".join(ps["warnings"])
            required = ["color", "depth"] + (["odom"] if cfg["topics.odom"] else [])
            level, message = feed_health(ps["last_seen_age_s"], required, cfg["diagnostics.stale_warn_s"],
                                         cfg["diagnostics.stale_error_s"], time.monotonic() - self._t_activated)
            level = bytes([level]) if isinstance(DiagnosticStatus.OK, bytes) else level
            message = "mapping" if message == "inputs OK" else message
        if self.memory is not None:
            snap = self.memory.snapshot(allow_stale=True)
            kv["instances"] = str(len(snap.instances))
        if self.worker is not None:
            kv["query_queue"] = str(self.worker.queue_depth)
            for k, v in vars(self.worker.stats).items():
                kv[f"queries_{k}"] = str(v)
        kv["model"] = self.backend.name if self.backend is not None else f"unavailable: {self.backend_error}"
        if self.backend is None and level == DiagnosticStatus.OK:
            level, message = DiagnosticStatus.WARN, "mapping; no model loaded"
        st.level, st.message = level, message
        st.values = [KeyValue(key=k, value=v) for k, v in kv.items()]
        return st

    def _publish_diagnostics(self) -> None:
        if "diagnostics" not in self._pubs:
            return
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [self.diagnostics()]
        self._pubs["diagnostics"].publish(arr)


def main(args: Optional[list[str]] = None) -> None:
    """Console script ``scene_vlm_node``: spin until Ctrl-C; with ``autostart`` true configure and activate
    first, else wait in the unconfigured state for a lifecycle manager to drive the transitions."""
    from ..paths import use_fastdds_profile

    use_fastdds_profile()
    rclpy.init(args=args)
    node = SceneVlmNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        else:
            node.get_logger().info("autostart is false: unconfigured, waiting for a lifecycle manager "
                                   "(configure, activate)")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C: rclpy's signal handler has shut the context down
    finally:
        # Stop the mapping thread, the query worker and the model; idempotent, and safe whether or
        # not the lifecycle shutdown transition already ran with the context.
        node._release()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
