"""Unit tests of :mod:`scene_vlm_ros.vlm.engine`: request validation, QueryEngine, QueryWorker.

The backends here are small real :class:`VLMBackend` subclasses with ``needs_images = False`` (no
prompt rendering), each exercising one behaviour the engine/worker must handle.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np
import pytest

from scene_vlm_ros.core.spatial import snapshot_from_objects
from scene_vlm_ros.core.types import GroundTruthObject, SceneSnapshot
from scene_vlm_ros.vlm.engine import (
    MAX_QUESTION_CHARS,
    ErrorCode,
    QueryEngine,
    QueryRequest,
    QueryResult,
    QueryWorker,
    infer_task,
    validate_request,
)
from scene_vlm_ros.vlm.types import (
    GenerationRequest,
    GenerationTimeout,
    ModelError,
    ModelUnavailableError,
    Task,
    VLMBackend,
)

WAIT_S = 10.0  # generous upper bound for "eventually" waits (never reached when things work)


# ----------------------------------------------------------------------------- test backends
class _Base(VLMBackend):
    needs_images = False

    def load(self) -> None:
        pass


class FixedBackend(_Base):
    """Answers a fixed text and records what it was asked."""

    name = "fixed"

    def __init__(self, text: str):
        self.text = text
        self.calls: list[tuple[GenerationRequest, float]] = []

    def generate(self, request, *, timeout_s, cancel=None):
        self.calls.append((request, timeout_s))
        return self.text


class RaisingBackend(_Base):
    name = "raising"

    def __init__(self, exc: BaseException):
        self.exc = exc

    def generate(self, request, *, timeout_s, cancel=None):
        raise self.exc


class HangingBackend(_Base):
    """Ignores its timeout and cancel when the question contains "hang"; answers <OBJ001> otherwise."""

    name = "hanging"

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()
        self.cancels: list[threading.Event] = []

    def generate(self, request, *, timeout_s, cancel=None):
        if "hang" in request.question:
            self.cancels.append(cancel)
            self.started.set()
            self.release.wait()  # deliberately ignores timeout_s and cancel
            return "<OBJ001>"
        return "<OBJ001>."


class CancelAwareBackend(_Base):
    """Stops as soon as its cancel event is set and raises GenerationTimeout.

    It waits on ``cancel`` alone (bounded by WAIT_S) so the test sees that the *worker* set it.
    """

    name = "cancel_aware"

    def __init__(self):
        self.saw_cancel = threading.Event()
        self.returned_at: Optional[float] = None

    def generate(self, request, *, timeout_s, cancel=None):
        assert cancel is not None
        if cancel.wait(WAIT_S):
            self.saw_cancel.set()
        self.returned_at = time.monotonic()
        raise GenerationTimeout("cancelled")


class GateBackend(_Base):
    """Blocks each call until ``gate`` is set (bounded by WAIT_S so a broken test cannot hang forever)."""

    name = "gate"

    def __init__(self, text: str = "<OBJ002>.", delay_s: float = 0.0):
        self.gate = threading.Event()
        self.started = threading.Event()
        self.text = text
        self.delay_s = delay_s
        self.n_calls = 0
        self._lock = threading.Lock()

    def generate(self, request, *, timeout_s, cancel=None):
        with self._lock:
            self.n_calls += 1
        self.started.set()
        if self.delay_s:
            time.sleep(self.delay_s)
        else:
            self.gate.wait(WAIT_S)
        return self.text


# ----------------------------------------------------------------------------- fixtures
OBJECTS = [
    GroundTruthObject(1, "chair", "red", (1.0, 0.0, 0.45), (0.5, 0.5, 0.9)),
    GroundTruthObject(2, "table", "blue", (3.0, 1.0, 0.4), (1.2, 0.8, 0.8), 0.3),
    GroundTruthObject(7, "lamp", "yellow", (0.0, 2.0, 0.8), (0.3, 0.3, 1.6)),
]


@pytest.fixture(scope="module")
def snapshot() -> SceneSnapshot:
    return snapshot_from_objects(OBJECTS, points_per_object=20)


@pytest.fixture
def empty_snapshot() -> SceneSnapshot:
    return SceneSnapshot(
        stamp_s=0.0, frame_id="map", points=np.zeros((0, 3), np.float32), colors=np.zeros((0, 3), np.uint8),
        n_frames_integrated=0,
    )


def _deadline(s: float = 5.0) -> float:
    return time.monotonic() + s


class Collector:
    """Thread-safe on_done recorder: every result per request key, and when the first arrived."""

    def __init__(self):
        self._cond = threading.Condition()
        self.results: dict[int, list[QueryResult]] = {}
        self.times: dict[int, float] = {}

    def callback(self, key: int):
        def on_done(result: QueryResult) -> None:
            with self._cond:
                self.results.setdefault(key, []).append(result)
                self.times.setdefault(key, time.monotonic())
                self._cond.notify_all()

        return on_done

    def wait_for(self, n: int, timeout: float = WAIT_S) -> bool:
        """True once results for at least ``n`` distinct requests have arrived."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.results) >= n, timeout)


# ----------------------------------------------------------------------------- validate_request / infer_task
@pytest.mark.parametrize(
    "req, fragment",
    [
        (QueryRequest(""), "empty"),
        (QueryRequest("   \n\t"), "empty"),
        (QueryRequest("x" * (MAX_QUESTION_CHARS + 1)), "limit"),
        (QueryRequest("the chair\x00"), "NUL"),
        (QueryRequest("describe it", Task.CAPTION, object_id=-1), "object_id"),
        (QueryRequest("where is the chair", timeout_s=-1.0), "timeout_s"),
        (QueryRequest("where is the chair", timeout_s=float("nan")), "timeout_s"),
        (QueryRequest("where is the chair", timeout_s=float("inf")), "timeout_s"),
        (QueryRequest(None), "empty"),  # type: ignore[arg-type]
    ],
)
def test_validate_request_rejects(req, fragment):
    res = validate_request(req)
    assert res is not None
    assert res.error_code == ErrorCode.INVALID_REQUEST
    assert fragment in res.error_msg


@pytest.mark.parametrize(
    "req",
    [
        QueryRequest("where is the red chair?"),
        QueryRequest("x" * MAX_QUESTION_CHARS),
        QueryRequest("", Task.CAPTION, object_id=3),  # captions need no question
        QueryRequest("find the lamp", Task.GROUNDING, timeout_s=2.5),
    ],
)
def test_validate_request_accepts(req):
    assert validate_request(req) is None


def test_validate_request_custom_limit():
    assert validate_request(QueryRequest("abcdef"), max_chars=5).error_code == ErrorCode.INVALID_REQUEST
    assert validate_request(QueryRequest("abcde"), max_chars=5) is None


@pytest.mark.parametrize(
    "question, task",
    [
        ("How far is the chair from the table?", Task.SPATIAL),
        ("how many chairs are there", Task.SPATIAL),
        ("Are there any red objects?", Task.MULTI_GROUNDING),
        ("What color is the lamp?", Task.QA),
        ("Is there a sofa in the room?", Task.QA),
        ("the red chair next to the table", Task.GROUNDING),
    ],
)
def test_infer_task(question, task):
    assert infer_task(question) == task


# ----------------------------------------------------------------------------- QueryEngine
def test_engine_model_unavailable_when_no_backend(snapshot):
    eng = QueryEngine(None, backend_error="model 'foo' failed to load: no weights at /x")
    res = eng.answer(QueryRequest("the red chair"), snapshot, _deadline())
    assert res.error_code == ErrorCode.MODEL_UNAVAILABLE
    assert res.error_msg == "model 'foo' failed to load: no weights at /x"
    assert QueryEngine(None).answer(QueryRequest("x"), snapshot, _deadline()).error_msg  # never empty


def test_engine_no_map_yet_for_empty_snapshot(empty_snapshot):
    backend = FixedBackend("<OBJ001>.")
    res = QueryEngine(backend).answer(QueryRequest("the red chair"), empty_snapshot, _deadline())
    assert res.error_code == ErrorCode.NO_MAP_YET
    assert backend.calls == []  # the model is not asked about an empty map


def test_engine_success_returns_the_named_instance(snapshot):
    backend = FixedBackend("<OBJ002>.")
    res = QueryEngine(backend, max_new_tokens=17).answer(
        QueryRequest("the blue table", Task.GROUNDING), snapshot, _deadline(5.0)
    )
    assert res.error_code == ErrorCode.SUCCESS, res.error_msg
    assert [i.instance_id for i in res.instances] == [2]
    assert res.instances[0].label == "table"
    assert res.instances[0].box == OBJECTS[1].box
    assert res.unknown_ids == []
    assert res.answer == "<OBJ002>."
    assert res.frame_id == "map" and res.snapshot_stamp_s == snapshot.stamp_s
    assert "generate" in res.timings_ms and "parse" in res.timings_ms
    # What the backend was given.
    (gen_req, timeout_s), = backend.calls
    assert gen_req.task == Task.GROUNDING and gen_req.question == "the blue table"
    assert gen_req.snapshot is snapshot and gen_req.max_new_tokens == 17
    assert gen_req.messages == []  # needs_images=False: no prompt rendering
    assert 0 < timeout_s <= 5.0


def test_engine_auto_task_is_inferred_before_generation(snapshot):
    backend = FixedBackend("2.5 meters.")
    res = QueryEngine(backend).answer(QueryRequest("how far is the chair from the table?"), snapshot, _deadline())
    assert backend.calls[0][0].task == Task.SPATIAL
    assert res.error_code == ErrorCode.SUCCESS
    assert res.answer == "2.5 meters."
    assert res.instances == []


def test_engine_no_match_for_unknown_id(snapshot):
    res = QueryEngine(FixedBackend("<OBJ042>.")).answer(QueryRequest("the sofa", Task.GROUNDING), snapshot,
                                                        _deadline())
    assert res.error_code == ErrorCode.NO_MATCH
    assert res.unknown_ids == [42]
    assert res.instances == []
    assert "42" in res.error_msg


def test_engine_no_match_when_model_names_nothing(snapshot):
    res = QueryEngine(FixedBackend("I cannot see it.")).answer(QueryRequest("the sofa", Task.GROUNDING), snapshot,
                                                               _deadline())
    assert res.error_code == ErrorCode.NO_MATCH
    assert res.unknown_ids == [] and res.instances == []


def test_engine_multi_grounding_and_qa(snapshot):
    eng = QueryEngine(FixedBackend("Yes. <OBJ001> and <OBJ007>."))
    res = eng.answer(QueryRequest("are there any tall things", Task.MULTI_GROUNDING), snapshot, _deadline())
    assert res.error_code == ErrorCode.SUCCESS
    assert [i.instance_id for i in res.instances] == [1, 7]
    res = QueryEngine(FixedBackend("No.")).answer(
        QueryRequest("are there any sofas", Task.MULTI_GROUNDING), snapshot, _deadline()
    )
    assert res.error_code == ErrorCode.SUCCESS and res.instances == []  # "none" is a valid answer
    res = QueryEngine(FixedBackend("<OBJ099>.")).answer(
        QueryRequest("are there any sofas", Task.MULTI_GROUNDING), snapshot, _deadline()
    )
    assert res.error_code == ErrorCode.NO_MATCH and res.unknown_ids == [99]
    res = QueryEngine(FixedBackend("Red.")).answer(QueryRequest("what color is the chair", Task.QA), snapshot,
                                                   _deadline())
    assert res.error_code == ErrorCode.SUCCESS and res.answer == "Red." and res.instances == []


def test_engine_caption_needs_existing_object(snapshot):
    backend = FixedBackend("A red chair.")
    res = QueryEngine(backend).answer(QueryRequest("", Task.CAPTION, object_id=55), snapshot, _deadline())
    assert res.error_code == ErrorCode.INVALID_REQUEST and "55" in res.error_msg
    assert backend.calls == []


@pytest.mark.parametrize(
    "exc, code, fragment",
    [
        (ModelError("the model produced garbage"), ErrorCode.MODEL_ERROR, "the model produced garbage"),
        (RuntimeError("backend bug"), ErrorCode.MODEL_ERROR, "RuntimeError: backend bug"),
        (ModelUnavailableError("weights gone"), ErrorCode.MODEL_UNAVAILABLE, "weights gone"),
        (GenerationTimeout("too slow"), ErrorCode.TIMEOUT, "too slow"),
    ],
)
def test_engine_maps_backend_exceptions(snapshot, exc, code, fragment):
    res = QueryEngine(RaisingBackend(exc)).answer(QueryRequest("the chair", Task.GROUNDING), snapshot, _deadline())
    assert res.error_code == code
    assert fragment in res.error_msg
    assert res.instances == []


def test_engine_deadline_already_passed(snapshot):
    backend = FixedBackend("<OBJ001>.")
    res = QueryEngine(backend).answer(QueryRequest("the chair"), snapshot, time.monotonic() - 0.1)
    assert res.error_code == ErrorCode.TIMEOUT
    assert backend.calls == []


def test_engine_cancel_aware_backend_times_out(snapshot):
    backend = CancelAwareBackend()
    t0 = time.monotonic()
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    res = QueryEngine(backend).answer(QueryRequest("the chair"), snapshot, t0 + 5.0, cancel)
    assert res.error_code == ErrorCode.TIMEOUT
    assert backend.saw_cancel.is_set()
    assert time.monotonic() - t0 < 0.2 + 0.5


# ----------------------------------------------------------------------------- QueryWorker
@pytest.fixture
def workers():
    """Created workers (and gates to open) are shut down / released at teardown."""
    made: list[QueryWorker] = []
    events: list[threading.Event] = []
    yield made, events
    for ev in events:
        ev.set()
    for w in made:
        w.shutdown(timeout_s=1.0)


def test_worker_rejects_bad_config():
    with pytest.raises(ValueError):
        QueryWorker(QueryEngine(FixedBackend("x")), queue_size=0)
    with pytest.raises(ValueError):
        QueryWorker(QueryEngine(FixedBackend("x")), n_threads=0)


def test_worker_answers_and_calls_on_done_once(snapshot, workers):
    w = QueryWorker(QueryEngine(FixedBackend("<OBJ007>.")))
    workers[0].append(w)
    col = Collector()
    assert w.submit(QueryRequest("the lamp", Task.GROUNDING, timeout_s=5.0), snapshot, col.callback(0))
    assert col.wait_for(1)
    time.sleep(0.05)
    (res,) = col.results[0]
    assert res.error_code == ErrorCode.SUCCESS
    assert [i.instance_id for i in res.instances] == [7]
    assert res.latency_s >= 0.0
    assert w.stats.accepted == 1 and w.stats.succeeded == 1 and w.stats.timed_out == 0


def test_worker_timeout_on_time_and_keeps_serving(snapshot, workers):
    backend = HangingBackend()
    w = QueryWorker(QueryEngine(backend), queue_size=4, n_threads=1)
    workers[0].append(w)
    workers[1].append(backend.release)
    col = Collector()
    t_submit = time.monotonic()
    assert w.submit(QueryRequest("hang please", Task.GROUNDING, timeout_s=0.3), snapshot, col.callback(0))
    assert col.wait_for(1, timeout=0.3 + 2.0)
    assert col.times[0] - t_submit <= 0.3 + 0.5
    (res,) = col.results[0]
    assert res.error_code == ErrorCode.TIMEOUT
    assert backend.started.is_set()
    assert backend.cancels[0] is not None and backend.cancels[0].is_set()  # the backend was told to stop

    # The only worker thread is still stuck in the backend; a replacement must answer later requests.
    assert w.submit(QueryRequest("the chair", Task.GROUNDING, timeout_s=5.0), snapshot, col.callback(1))
    assert col.wait_for(2, timeout=5.0)
    assert col.results[1][0].error_code == ErrorCode.SUCCESS
    assert w.stats.abandoned_threads == 1
    assert w.stats.timed_out == 1

    # When the stuck backend finally returns, the late answer is not delivered a second time.
    backend.release.set()
    time.sleep(0.2)
    assert len(col.results[0]) == 1 and col.results[0][0].error_code == ErrorCode.TIMEOUT


def test_worker_default_timeout_applies_when_request_has_none(snapshot, workers):
    backend = HangingBackend()
    w = QueryWorker(QueryEngine(backend), default_timeout_s=0.2)
    workers[0].append(w)
    workers[1].append(backend.release)
    col = Collector()
    t0 = time.monotonic()
    assert w.submit(QueryRequest("hang", timeout_s=0.0), snapshot, col.callback(0))
    assert col.wait_for(1, timeout=3.0)
    assert col.results[0][0].error_code == ErrorCode.TIMEOUT
    assert col.times[0] - t0 <= 0.2 + 0.5


def test_worker_cancel_aware_backend_stops_at_deadline(snapshot, workers):
    backend = CancelAwareBackend()
    w = QueryWorker(QueryEngine(backend))
    workers[0].append(w)
    col = Collector()
    t0 = time.monotonic()
    assert w.submit(QueryRequest("the chair", timeout_s=0.3), snapshot, col.callback(0))
    assert col.wait_for(1, timeout=3.0)
    assert col.results[0][0].error_code == ErrorCode.TIMEOUT
    assert col.times[0] - t0 <= 0.3 + 0.5
    assert backend.saw_cancel.wait(2.0)  # the worker set the request's cancel event
    time.sleep(0.05)
    assert backend.returned_at is not None and backend.returned_at - t0 <= 0.3 + 0.5
    assert len(col.results[0]) == 1


def test_worker_busy_when_queue_full_and_nothing_lost(snapshot, workers):
    backend = GateBackend()
    w = QueryWorker(QueryEngine(backend), queue_size=4, n_threads=1, default_timeout_s=WAIT_S)
    workers[0].append(w)
    workers[1].append(backend.gate)
    col = Collector()
    accepted, rejected = [], []
    req = QueryRequest("the table", Task.GROUNDING)
    assert w.submit(req, snapshot, col.callback(0))
    accepted.append(0)
    assert backend.started.wait(WAIT_S)  # the thread holds request 0; the queue is empty again
    for k in range(1, 50):
        (accepted if w.submit(req, snapshot, col.callback(k)) else rejected).append(k)
    assert accepted == [0, 1, 2, 3, 4]  # one running + queue_size waiting
    assert len(rejected) == 45
    assert w.stats.busy == 45 and w.stats.accepted == 5
    assert w.queue_depth == 4
    backend.gate.set()
    assert col.wait_for(len(accepted))
    time.sleep(0.1)
    assert sorted(col.results) == accepted  # rejected requests are the caller's to answer (BUSY)
    for k in accepted:
        assert len(col.results[k]) == 1
        assert col.results[k][0].error_code == ErrorCode.SUCCESS
    assert backend.n_calls == 5


def test_worker_many_submissions_with_slow_backend(snapshot, workers):
    backend = GateBackend(delay_s=0.01)
    w = QueryWorker(QueryEngine(backend), queue_size=3, n_threads=2, default_timeout_s=WAIT_S)
    workers[0].append(w)
    col = Collector()
    accepted = [k for k in range(50) if w.submit(QueryRequest("the lamp"), snapshot, col.callback(k))]
    assert 3 <= len(accepted) < 50
    assert w.stats.accepted == len(accepted) and w.stats.busy == 50 - len(accepted)
    assert col.wait_for(len(accepted))
    time.sleep(0.1)
    assert sorted(col.results) == accepted
    assert all(len(v) == 1 for v in col.results.values())
    assert w.stats.succeeded + w.stats.failed + w.stats.timed_out == len(accepted)


def test_worker_queued_request_expires_while_waiting(snapshot, workers):
    backend = GateBackend()
    w = QueryWorker(QueryEngine(backend), queue_size=4, n_threads=1)
    workers[0].append(w)
    workers[1].append(backend.gate)
    col = Collector()
    assert w.submit(QueryRequest("first", timeout_s=WAIT_S), snapshot, col.callback(0))
    assert backend.started.wait(WAIT_S)
    t0 = time.monotonic()
    assert w.submit(QueryRequest("second", timeout_s=0.2), snapshot, col.callback(1))
    assert col.wait_for(1, timeout=2.0)
    assert list(col.results) == [1] and col.results[1][0].error_code == ErrorCode.TIMEOUT
    assert col.times[1] - t0 <= 0.2 + 0.5
    backend.gate.set()
    assert col.wait_for(2)
    time.sleep(0.1)
    assert col.results[0][0].error_code == ErrorCode.SUCCESS
    assert len(col.results[1]) == 1
    assert backend.n_calls == 1  # the expired request never reached the model


def test_worker_survives_raising_callback_and_engine(snapshot, workers):
    class BrokenEngine(QueryEngine):
        def answer(self, req, snapshot, deadline_s, cancel=None):
            if req.question == "explode":
                raise KeyError("engine bug")
            return super().answer(req, snapshot, deadline_s, cancel)

    w = QueryWorker(BrokenEngine(FixedBackend("<OBJ001>.")))
    workers[0].append(w)
    col = Collector()

    def bad_callback(result):
        col.callback(0)(result)
        raise RuntimeError("caller bug")

    assert w.submit(QueryRequest("the chair", timeout_s=5.0), snapshot, bad_callback)
    assert w.submit(QueryRequest("explode", timeout_s=5.0), snapshot, col.callback(1))
    assert w.submit(QueryRequest("the chair", timeout_s=5.0), snapshot, col.callback(2))
    assert col.wait_for(3)
    assert col.results[0][0].error_code == ErrorCode.SUCCESS
    assert col.results[1][0].error_code == ErrorCode.MODEL_ERROR and "engine bug" in col.results[1][0].error_msg
    assert col.results[2][0].error_code == ErrorCode.SUCCESS


def test_worker_shutdown_completes_queued_requests(snapshot, workers):
    backend = GateBackend()
    w = QueryWorker(QueryEngine(backend), queue_size=4, n_threads=1, default_timeout_s=WAIT_S)
    workers[1].append(backend.gate)
    col = Collector()
    assert w.submit(QueryRequest("running"), snapshot, col.callback(0))
    assert backend.started.wait(WAIT_S)
    for k in (1, 2, 3):
        assert w.submit(QueryRequest(f"queued {k}"), snapshot, col.callback(k))
    w.shutdown(timeout_s=0.2)
    # Queued requests are answered by shutdown itself, not dropped.
    for k in (1, 2, 3):
        assert len(col.results[k]) == 1
        assert col.results[k][0].error_code == ErrorCode.MODEL_UNAVAILABLE
        assert "shutting down" in col.results[k][0].error_msg
    # The running one finishes normally once its backend returns.
    backend.gate.set()
    assert col.wait_for(4)
    time.sleep(0.1)
    assert len(col.results[0]) == 1 and col.results[0][0].error_code == ErrorCode.SUCCESS
    assert backend.n_calls == 1


def test_worker_submit_after_shutdown_is_answered_at_once(snapshot):
    backend = FixedBackend("<OBJ001>.")
    w = QueryWorker(QueryEngine(backend), default_timeout_s=WAIT_S)
    w.shutdown(timeout_s=1.0)
    col = Collector()
    w.submit(QueryRequest("the chair"), snapshot, col.callback(0))
    assert col.wait_for(1, timeout=1.0)  # not only when the 10 s deadline passes
    assert len(col.results[0]) == 1
    assert col.results[0][0].error_code == ErrorCode.MODEL_UNAVAILABLE
    assert backend.calls == []


@pytest.mark.parametrize("timeout_s", [float("inf"), 1e12])
def test_worker_huge_timeout_does_not_kill_the_timer(snapshot, workers, monkeypatch, timeout_s):
    """An unvalidated huge timeout must still arm a working deadline timer (no thread crash)."""
    crashes = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashes.append(args.exc_value))
    backend = GateBackend()
    w = QueryWorker(QueryEngine(backend))
    workers[0].append(w)
    workers[1].append(backend.gate)
    col = Collector()
    assert w.submit(QueryRequest("the table", timeout_s=timeout_s), snapshot, col.callback(0))
    assert backend.started.wait(WAIT_S)
    time.sleep(0.1)
    backend.gate.set()
    assert col.wait_for(1)
    assert col.results[0][0].error_code == ErrorCode.SUCCESS
    assert crashes == []


def test_worker_abandoned_thread_limit_still_answers_every_request(snapshot, workers):
    """With the replacement budget spent, later requests still get an answer (TIMEOUT) on time."""
    backend = HangingBackend()
    w = QueryWorker(QueryEngine(backend), queue_size=4, n_threads=1, max_abandoned=1)
    workers[0].append(w)
    workers[1].append(backend.release)
    col = Collector()
    assert w.submit(QueryRequest("hang 1", timeout_s=0.2), snapshot, col.callback(0))
    assert col.wait_for(1, timeout=3.0)
    # The replacement thread takes the second hanging request; no further replacement is allowed.
    assert w.submit(QueryRequest("hang 2", timeout_s=0.2), snapshot, col.callback(1))
    assert col.wait_for(2, timeout=3.0)
    time.sleep(0.2)
    assert w.stats.abandoned_threads == 1
    t0 = time.monotonic()
    assert w.submit(QueryRequest("the chair", timeout_s=0.3), snapshot, col.callback(2))
    assert col.wait_for(3, timeout=3.0)
    assert col.results[2][0].error_code == ErrorCode.TIMEOUT  # every thread is stuck: nobody ran it
    assert col.times[2] - t0 <= 0.3 + 0.5
    # Once the backend lets go, the worker serves again.
    backend.release.set()
    assert w.submit(QueryRequest("the chair", timeout_s=5.0), snapshot, col.callback(3))
    assert col.wait_for(4, timeout=5.0)
    assert col.results[3][0].error_code == ErrorCode.SUCCESS
    assert all(len(v) == 1 for v in col.results.values())
