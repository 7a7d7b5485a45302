"""``scene-vlm``: one command line for the whole package.

Subcommands import their heavy dependencies (Open3D, rclpy, torch) only when they run, so
``scene-vlm --help`` is instant and a machine without ROS can still map bags and evaluate.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from .commands.make_bag import make_bag

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="3D scene memory + language queries with 3D boxes for ROS 2 robots.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks; figures are printed and written as JSON.")
app.add_typer(bench_app, name="bench")
app.command("make-bag", help="Write a rosbag2 file from a synthetic scene or a real RGB-D sequence.")(make_bag)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


def _write_json(obj: dict, out: Optional[Path]) -> None:
    from .commands import emit_json

    emit_json(obj, out)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output directory for the report, BEV and prompt images.")] = Path(
        "out/demo"),
    frames: Annotated[int, typer.Option(help="Frames of the synthetic walk-through.")] = 150,
    seed: Annotated[int, typer.Option(help="Synthetic scene seed.")] = 0,
    rate: Annotated[float, typer.Option(help="Replay rate of the player, which runs in its own process "
                                             "(1.0 = real time, as a camera).")] = 1.0,
    kitchen: Annotated[bool, typer.Option(help="Also map the real 7-Scenes kitchen if ../shared/data has it.")] = True,
) -> None:
    """Map a synthetic room through the node, ask /scene_query questions, score boxes against ground truth."""
    from .commands.demo import run_demo

    _setup_logging(False)
    run_demo(out, frames=frames, seed=seed, rate=rate, with_kitchen=kitchen)


@app.command("map")
def map_(
    source: Annotated[Path, typer.Argument(help="A rosbag2 bag (dir or .mcap) or a 7-Scenes-layout folder.")],
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("out/map"),
    voxel_size_m: Annotated[float, typer.Option(help="TSDF voxel size (m).")] = 0.05,
    detector_dir: Annotated[Optional[Path], typer.Option(help="Yolo-Fastest folder; enables the detector.")] = None,
    no_mask: Annotated[bool, typer.Option(help="Ignore instance masks in the source.")] = False,
    no_geometry: Annotated[bool, typer.Option(help="No geometric-segmentation instances.")] = False,
    max_frames: Annotated[Optional[int], typer.Option(help="Stop after this many frames.")] = None,
    max_rate_hz: Annotated[float, typer.Option(help="Integration-rate policy (the node's mapping.max_rate_hz); "
                                                    "0 = every frame.")] = 0.0,
    question: Annotated[str, typer.Option(help="Question for the example prompt written beside the map.")] = (
        "where is the table?"),
) -> None:
    """Fuse a bag or dataset into a scene memory: objects.json, stats.json, memory/, bev.png, frames/, prompt.json."""
    from .commands.map import map_command
    from .core.mapping_worker import MappingWorkerConfig
    from .core.memory import MemoryConfig, SceneMemory
    from .vlm.artifacts import write_prompt_artifacts

    _setup_logging(False)
    cfg = MemoryConfig(voxel_size_m=voxel_size_m, use_detector=detector_dir is not None,
                       detector_model_dir=str(detector_dir) if detector_dir else None, use_mask=not no_mask,
                       use_geometry=not no_geometry)
    stats = map_command(source, out, cfg, max_frames, worker_config=MappingWorkerConfig(max_rate_hz=max_rate_hz))
    snap = SceneMemory.load(out / "memory").snapshot(refresh=True)
    write_prompt_artifacts(snap, out, question=question)
    typer.echo(json.dumps({k: v for k, v in stats.items() if k != "memory"}, indent=2, default=str))


@app.command()
def query(
    memory_dir: Annotated[Path, typer.Argument(help="A memory saved by `scene-vlm map` (DIR/memory) or SaveMemory.")],
    question: Annotated[str, typer.Argument(help="The question, e.g. 'where is the brown chair?'")],
    task: Annotated[str, typer.Option(help="auto | grounding | multi_grounding | qa | caption | spatial")] = "auto",
    backend: Annotated[str, typer.Option(help="fallback | transformers | openai")] = "fallback",
    model_path: Annotated[Optional[Path], typer.Option(help="transformers: local checkpoint directory.")] = None,
    base_url: Annotated[str, typer.Option(help="openai: server URL.")] = "http://127.0.0.1:8000",
    model: Annotated[str, typer.Option(help="openai: served model name.")] = "",
    timeout_s: Annotated[float, typer.Option(help="Deadline (s).")] = 60.0,
) -> None:
    """Answer one question offline against a saved scene memory (same engine as the node)."""
    import time

    from .core.memory import SceneMemory
    from .vlm.backends.factory import make_backend
    from .vlm.engine import QueryEngine, QueryRequest
    from .vlm.types import ModelUnavailableError, Task

    _setup_logging(False)
    snap = SceneMemory.load(memory_dir).snapshot(refresh=True)
    params: dict = {}
    if backend == "transformers":
        params = {"model_path": str(model_path or "")}
    elif backend == "openai":
        params = {"base_url": base_url, "model": model}
    be, err = None, ""
    try:
        be = make_backend(backend, **params)
        be.load()
    except ModelUnavailableError as exc:
        be, err = None, str(exc)
    engine = QueryEngine(be, err)
    result = engine.answer(QueryRequest(question, Task(task)), snap, time.monotonic() + timeout_s)
    typer.echo(json.dumps({
        "error_code": result.error_code.name, "error_msg": result.error_msg, "answer": result.answer,
        "boxes": [i.to_json() for i in result.instances], "frame_id": result.frame_id,
    }, indent=2))
    if result.error_code != 0:
        raise typer.Exit(code=1)


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def eval_(ctx: typer.Context) -> None:
    """Score a backend on a bag / ScanNet scan / 7-Scenes folder with a query or benchmark file (--help for options).

    scene-vlm eval SOURCE --queries Q.json --backend fallback|transformers|openai [--model-path DIR]
    [--topics NAME=/topic] [--prompt-profile default|gpt4scene] [--live] --out DIR
    """
    from .commands.eval_cmd import main as eval_main

    code = eval_main(list(ctx.args))
    if code:
        raise typer.Exit(code=code)


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Option(help="ROS 2 parameter file (e.g. config/scene_vlm.yaml).")] = None,
    bag: Annotated[Optional[Path], typer.Option(help="Replay this bag onto the node's topics.")] = None,
    rate: Annotated[float, typer.Option(help="Replay rate.")] = 1.0,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a parameter: name=value (YAML).")] = (
        None),
) -> None:
    """Start the scene_vlm graph in this process (the stand-in for `ros2 launch`); Ctrl-C stops it."""
    import yaml

    from .paths import use_fastdds_profile
    from .ros.bringup import Bringup

    _setup_logging(False)
    use_fastdds_profile()
    overrides = {}
    for item in set_ or []:
        name, _, value = item.partition("=")
        overrides[name.strip()] = yaml.safe_load(value)
    graph = Bringup(overrides, config_file=config).start()
    try:
        if bag is not None:
            from .ros.replay_node import BagReplayer

            rep = BagReplayer(bag, rate=rate, context=graph.context)
            rep.prepare()
            graph.add_node(rep)
            rep.play_async()
        typer.echo("scene_vlm running; /scene_query is served. Ctrl-C to stop.")
        graph.spin_forever()
    finally:
        graph.shutdown()


@app.command()
def replay(
    bag: Annotated[Path, typer.Argument(help="rosbag2 directory or .mcap/.db3 file.")],
    rate: Annotated[float, typer.Option(help="Playback rate (1.0 = real time, 0 = as fast as possible).")] = 1.0,
    wait_for: Annotated[Optional[list[str]], typer.Option(help="Topics that need a subscriber before playing.")] = (
        None),
    wait_s: Annotated[float, typer.Option(help="How long to wait for those subscribers (s).")] = 20.0,
) -> None:
    """Publish a bag onto live topics (the stand-in for `ros2 bag play`; raw CDR, recorded timing)."""
    import rclpy

    from .paths import use_fastdds_profile
    from .ros.replay_node import BagReplayer

    _setup_logging(False)
    use_fastdds_profile()
    rclpy.init()
    node = BagReplayer(bag, rate=rate)
    try:
        node.prepare()
        if wait_for and not node.wait_for_subscribers(wait_for, timeout_s=wait_s):
            typer.echo(f"no subscriber on {wait_for} after {wait_s} s; playing anyway", err=True)
        counts = node.play()
        typer.echo(json.dumps({"published": dict(counts), "skipped_topics": node.skipped_topics}))
    finally:
        node.destroy_node()
        rclpy.shutdown()


@bench_app.command("synthetic")
def bench_synthetic_cmd(frames: int = 60, out: Optional[Path] = None) -> None:
    """Synthetic renderer speed (frames/s at 320x240 and 640x480)."""
    from .commands.bench_synthetic import bench_synthetic

    _write_json(bench_synthetic(frames=frames), out)


@bench_app.command("mapping")
def bench_mapping_cmd(out: Optional[Path] = None, frames: int = 300, seed: int = 0,
                      detector_dir: Optional[Path] = None, kitchen_dir: Optional[Path] = None) -> None:
    """Fusion + instance update speed, memory, recall per instance source, oracle ceiling.

    The detector source and the real-kitchen yardstick run when their data is given or found in
    ../shared (models/yolo-fastest-1.1, data/7scenes-redkitchen)."""
    from .commands.bench_mapping import bench_mapping
    from .paths import find_shared

    detector_dir = detector_dir or find_shared("models", "yolo-fastest-1.1")
    kitchen_dir = kitchen_dir or find_shared("data", "7scenes-redkitchen")
    _write_json(bench_mapping(seed=seed, n_frames=frames, detector_dir=str(detector_dir) if detector_dir else None,
                              kitchen_dir=kitchen_dir), out)


@bench_app.command("soak")
def bench_soak_cmd(out: Optional[Path] = None, minutes: float = 10.0, kitchen_dir: Optional[Path] = None) -> None:
    """Memory over a long replay of the real kitchen (sensor minutes at 30 Hz): RSS and blocks must stay flat."""
    from .commands.bench_soak import bench_soak
    from .paths import find_shared

    kitchen_dir = kitchen_dir or find_shared("data", "7scenes-redkitchen")
    if kitchen_dir is None:
        raise typer.BadParameter("needs the 7-Scenes kitchen slice: pass --kitchen-dir or put ../shared beside")
    _write_json(bench_soak(kitchen_dir, minutes=minutes), out)


@bench_app.command("prompt")
def bench_prompt_cmd(out: Optional[Path] = None, repeats: int = 20) -> None:
    """BEV from 1 M points, markers on 8 frames, whole prompt (p50/p95 ms)."""
    from .commands.bench_prompt import bench_prompt

    _write_json(bench_prompt(repeats=repeats), out)


@bench_app.command("query")
def bench_query_cmd(out: Optional[Path] = None, repeats: int = 30) -> None:
    """Query overhead without model time, and mapping rate while queries run back to back."""
    from .commands.bench_query import bench_query

    _write_json(bench_query(repeats=repeats), out)


@bench_app.command("all")
def bench_all(out: Annotated[Path, typer.Option(help="Directory for the JSON files.")] = Path("out/bench")) -> None:
    """Every CPU benchmark in one run (figures for the README)."""
    out.mkdir(parents=True, exist_ok=True)
    bench_synthetic_cmd(out=out / "synthetic.json")
    bench_mapping_cmd(out=out / "mapping.json")
    bench_prompt_cmd(out=out / "prompt.json")
    bench_query_cmd(out=out / "query.json")
    # The README's ingest rows: node and player as processes on a 300-frame 640x480 30 Hz bag.
    from .commands.bench_ingest import main as bench_ingest_main
    from .commands.make_bag import make_bag as make_bag_cmd

    bag = out / "ingest_bag"
    if not (bag / "metadata.yaml").is_file():
        make_bag_cmd(source="synthetic", seed=1, frames=300, out=bag, progress=False, overwrite=True)
    bench_ingest_main([str(bag), "--out", str(out / "ingest.json")])
    bench_ingest_main([str(bag), "--no-offline", "--set", "mapping.max_rate_hz=15", "--out",
                       str(out / "ingest_15hz.json")])


@bench_app.command("recognition", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                   add_help_option=False)
def bench_recognition_cmd(ctx: typer.Context) -> None:
    """Real kitchen / lounge / synthetic no-mask: table, chairs, sofa, recall and labels per detector (--help)."""
    from .commands.bench_recognition import main as bench_recognition_main

    code = bench_recognition_main(list(ctx.args))
    if code:
        raise typer.Exit(code=code)


@bench_app.command("ingest", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                   add_help_option=False)
def bench_ingest_cmd(ctx: typer.Context) -> None:
    """Node and player in separate processes at 1.0x: frames published/received/integrated/skipped/dropped,
    integration p50/p95, recall vs the offline map (BAG [--rate R] [--set name=value] [--out F]; --help)."""
    from .commands.bench_ingest import main as bench_ingest_main

    code = bench_ingest_main(list(ctx.args))
    if code:
        raise typer.Exit(code=code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
