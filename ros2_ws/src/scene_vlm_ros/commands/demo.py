"""``scene-vlm demo``: the whole product on the embedded default, in about a minute.

1. Render a synthetic room with ground truth and write it as a rosbag2 (MCAP) file.
2. Start the scene_vlm node (in this process, real rclpy + Fast DDS) and replay the bag onto its
   topics with the project's replayer.
3. Ask grounding, counting and distance questions through a real ``/scene_query`` client and
   score the returned boxes against ground truth (3D IoU).
4. Write the BEV with object markers, marked keyframes, the prompt a VLM would get, and a report.
When the real 7-Scenes kitchen is beside the checkout (``../shared/data``), it is mapped too and
its BEV and a marked frame go into the report.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

log = logging.getLogger(__name__)


def _pick_questions(records: list[dict], per_task: int = 3) -> list[dict]:
    """A few grounding, counting and distance questions that need no camera frame."""
    picked: list[dict] = []
    want = {"grounding": per_task, "multi_grounding": 1, "qa": 1, "spatial": 2}
    for rec in records:
        if rec.get("frame_ids") or want.get(rec["task"], 0) <= 0:
            continue
        fam = rec.get("family", "")
        if rec["task"] == "spatial" and "distance" not in fam and "height" not in fam:
            continue
        if rec["task"] == "qa" and "count" not in fam:
            continue
        picked.append(rec)
        want[rec["task"]] -= 1
    return picked


def _extrinsic_param(T: np.ndarray) -> list[float]:
    from ..core.geometry import matrix_to_quat_xyzw

    return [float(v) for v in [*T[:3, 3], *matrix_to_quat_xyzw(T[:3, :3])]]


def map_kitchen(kitchen_dir: Path, out: Path) -> Optional[dict]:
    """Map the real 7-Scenes slice offline and write its BEV + a marked frame (README pictures)."""
    from ..core.memory import MemoryConfig, SceneMemory
    from ..datasets.seven_scenes import load_seven_scenes
    from ..vlm.artifacts import write_prompt_artifacts

    seq = load_seven_scenes(kitchen_dir, gravity_align=True)
    memory = SceneMemory(MemoryConfig(use_mask=False, use_geometry=True))
    for frame in seq.frames():
        memory.integrate(frame)
    snap = memory.snapshot(refresh=True)
    info = write_prompt_artifacts(snap, out, question="the table in the middle of the kitchen",
                                  n_frames=4)
    return {"frames": snap.n_frames_integrated, "instances": len(snap.instances), "artifacts": info}


def run_demo(out: Path = Path("out/demo"), frames: int = 150, width: int = 640, height: int = 480,
             seed: int = 0, rate: float = 1.0, with_kitchen: bool = True) -> dict:
    import rclpy

    from scene_vlm_interfaces.srv import SceneQuery

    from ..core.geometry import box_iou
    from ..datasets.questions import read_questions
    from ..datasets.render import DEFAULT_T_BASE_CAMERA_OPTICAL
    from ..datasets.synthetic import read_ground_truth
    from ..eval.query_metrics import score_answer, summarise
    from ..paths import find_shared
    from ..ros.bringup import Bringup
    from ..ros.conversions import box_to_oriented_box
    from ..ros.scene_vlm_node import SERVICE_QOS
    from ..vlm.artifacts import write_prompt_artifacts
    from .make_bag import make_bag

    console = Console()
    t_start = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bag = out / "synthetic_room"
    console.rule("[bold]1. synthetic room -> rosbag2 (MCAP)")
    summary = make_bag(source="synthetic", seed=seed, frames=frames, out=bag, width=width, height=height,
                       loop=True, overwrite=True, progress=True)
    gt_objects, _room = read_ground_truth(Path(summary["gt"]))
    gt_by_id = {o.object_id: o for o in gt_objects}
    records = read_questions(Path(summary["queries"]))
    console.print(f"{summary['frames']} frames, {len(gt_objects)} objects, {len(records)} generated questions")

    console.rule("[bold]2. scene_vlm node <- bag replay (rclpy, Fast DDS)")
    params = {"camera_extrinsic": _extrinsic_param(DEFAULT_T_BASE_CAMERA_OPTICAL), "model.backend": "fallback",
              "publish.cloud_period_s": 0.0,
              # a replay publishes faster than a camera when the CPU is busy: deep input queues
              "topics.qos_depth": 100}
    domain = int(os.environ.get("ROS_DOMAIN_ID", "0"))
    rows: list[dict] = []
    with Bringup(params, domain_id=domain) as graph:
        # The player runs in a process of its own at the recorded rate, as a camera driver does.
        player = subprocess.Popen(
            [sys.executable, "-c", "from scene_vlm_ros.cli import main; main()", "replay", str(bag), "--rate",
             str(rate), "--wait-for", "/camera/depth/image_raw", "--wait-for", "/odom"],
            env={**os.environ, "ROS_DOMAIN_ID": str(domain)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        n_images = summary["topics"].get("/camera/depth/image_raw", summary["frames"])
        with Progress(TextColumn("replaying (player process, {task.fields[rate]}x)"), BarColumn(),
                      TextColumn("{task.completed}/{task.total} depth images received"), TimeElapsedColumn(),
                      console=console) as bar:
            task = bar.add_task("replay", total=n_images, rate=rate)
            while player.poll() is None:
                bar.update(task, completed=graph.node.pipeline.received.get("depth", 0))
                time.sleep(0.1)
            bar.update(task, completed=graph.node.pipeline.received.get("depth", 0))
        stdout, stderr = player.communicate()
        if player.returncode != 0:
            raise RuntimeError(f"the player failed: {stderr[-2000:]}")
        published = json.loads(stdout.strip().splitlines()[-1])["published"]
        n_integrated = graph.node.mapper.wait_settled()
        snap = graph.node.memory.snapshot(refresh=True)
        diag = {kv.key: kv.value for kv in graph.node.diagnostics().values}
        dropped = {k[len("dropped_"):]: v for k, v in diag.items() if k.startswith("dropped_")}
        console.print(
            f"published {published.get('/camera/depth/image_raw')} frames, received {diag.get('frames_received')}, "
            f"integrated {n_integrated}, skipped by the rate policy "
            f"(mapping.max_rate_hz={graph.node.cfg['mapping.max_rate_hz']}) "
            f"{diag.get('frames_skipped_by_rate_policy')}, dropped {dropped or 'none'}; {len(snap.instances)} "
            f"instances; integration p50 {diag.get('integration_ms_p50')} ms / p95 {diag.get('integration_ms_p95')} ms")

        console.rule("[bold]3. /scene_query through a real service client")
        client_node = rclpy.create_node("scene_vlm_demo_client", context=graph.context)
        graph.add_node(client_node)
        client = client_node.create_client(SceneQuery, "/scene_query", qos_profile=SERVICE_QOS)
        client.wait_for_service(timeout_sec=10.0)
        table = Table(show_lines=False)
        for col in ("task", "question", "answer", "box (centre / size, m)", "IoU vs GT", "latency"):
            table.add_column(col)
        for rec in _pick_questions(records):
            future = client.call_async(SceneQuery.Request(question=rec["question"], timeout_s=10.0))
            while not future.done():
                time.sleep(0.005)
            resp = future.result()
            boxes = [box_to_oriented_box(b) for b in resp.boxes]
            inst = [snap.instance(b.instance_id) for b in resp.boxes]
            inst = [i for i in inst if i is not None]
            scores = score_answer(rec, resp.answer, inst, gt_by_id)
            ious = []
            for box in boxes[:3]:
                best = max((box_iou(box, gt_by_id[t].box) for t in rec.get("target_ids", []) if t in gt_by_id),
                           default=None)
                ious.append(best)
            box_txt = "; ".join(f"#{b.instance_id} {b.label} ({b.center.position.x:.2f}, {b.center.position.y:.2f},"
                                f" {b.center.position.z:.2f}) / ({b.size.x:.2f}, {b.size.y:.2f}, {b.size.z:.2f})"
                                for b in resp.boxes[:3])
            iou_txt = ", ".join("-" if v is None else f"{v:.2f}" for v in ious) or "-"
            code = SceneQuery.Response
            answer = resp.answer if resp.error_code == code.SUCCESS else f"[{resp.error_code}] {resp.error_msg}"
            latency = f"{resp.latency_s * 1e3:.0f} ms"
            table.add_row(rec["task"], rec["question"], answer, box_txt or "-", iou_txt, latency)
            rows.append({"id": rec["id"], "task": rec["task"], "family": rec.get("family"), "question": rec["question"],
                         "expected": rec["answer"], "answer": resp.answer, "error_code": int(resp.error_code),
                         "error_msg": resp.error_msg, "ious": ious, "scores": scores, "latency_s": resp.latency_s})
        console.print(table)

        console.rule("[bold]4. what a VLM would be shown")
        artifacts = write_prompt_artifacts(snap, out / "prompt", question=rows[0]["question"] if rows else "the table",
                                           n_frames=8)
    kitchen = None
    kitchen_dir = find_shared("data", "7scenes-redkitchen")
    if with_kitchen and kitchen_dir is not None:
        console.rule("[bold]5. the real 7-Scenes kitchen (../shared/data)")
        kitchen = map_kitchen(kitchen_dir, out / "kitchen")
        console.print(f"kitchen: {kitchen['frames']} frames, {kitchen['instances']} instances -> {out / 'kitchen'}")
    report = {
        "frames_in_bag": summary["frames"], "frames_published": published.get("/camera/depth/image_raw"),
        "frames_integrated": n_integrated, "instances": len(snap.instances),
        "gt_objects": len(gt_objects), "diagnostics": diag, "questions": rows, "summary": summarise(rows),
        "prompt_artifacts": artifacts, "kitchen": kitchen, "wall_s": time.monotonic() - t_start,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    _write_markdown(out / "report.md", report)
    console.print(f"[green]demo finished in {report['wall_s']:.0f} s; report: {out / 'report.md'}, "
                  f"BEV: {out / 'prompt' / 'bev.png'}")
    return report


def _write_markdown(path: Path, report: dict) -> None:
    lines = ["# scene_vlm_ros demo report", "",
             f"Synthetic room: {report['frames_integrated']}/{report['frames_in_bag']} frames integrated, "
             f"{report['instances']} instances for {report['gt_objects']} ground-truth objects.", "",
             "![BEV with object markers](prompt/bev.png)", "",
             "| task | question | answer | IoU vs GT | latency |", "|---|---|---|---|---|"]
    for r in report["questions"]:
        ious = ", ".join("-" if v is None else f"{v:.2f}" for v in r["ious"]) or "-"
        ans = r["answer"] if r["error_code"] == 0 else f"error {r['error_code']}: {r['error_msg']}"
        lines.append(f"| {r['task']} | {r['question']} | {ans} | {ious} | {r['latency_s'] * 1e3:.0f} ms |")
    lines += ["", "## Scores", "", "```", json.dumps(report["summary"], indent=2), "```"]
    if report.get("kitchen"):
        lines += ["", "## Real 7-Scenes kitchen", "", "![kitchen BEV](kitchen/bev.png)"]
    path.write_text("\n".join(lines) + "\n")
