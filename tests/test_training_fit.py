"""The CPU training chain: synthetic scene -> build-data -> fit a tiny Qwen2-VL with both ROSS3D
losses -> export -> the node's transformers backend loads it and answers through QueryEngine.

Also: exact resume, LoRA, and the errors for directories that are not ours. Models are tiny and
random (built from configs, saved with save_pretrained, loaded through the real loading code).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("scene_vlm_training", reason="install the training package: pip install -e training/")
pytest.importorskip("diffusers", reason="the reconstruction heads need diffusers")

from safetensors import safe_open  # noqa: E402
from scene_vlm_training.cli import main as cli_main  # noqa: E402
from scene_vlm_training.config import BuildDataConfig, FitConfig, from_dict, load_config  # noqa: E402
from scene_vlm_training.data.build import synthetic_scene  # noqa: E402
from scene_vlm_training.data.dataset import collate  # noqa: E402
from scene_vlm_training.export import EXPORT_METADATA, export_checkpoint  # noqa: E402
from scene_vlm_training.fit import CheckpointError, Trainer, fit, read_checkpoint_marker  # noqa: E402
from scene_vlm_training.model.vae import build_tiny_vae  # noqa: E402
from scene_vlm_training.model.wrapper import HEAD_PREFIXES  # noqa: E402
from scene_vlm_training.step import probe_losses, to_device  # noqa: E402

from scene_vlm_ros.vlm.backends.factory import make_backend  # noqa: E402
from scene_vlm_ros.vlm.backends.tiny import build_tiny_qwen2vl  # noqa: E402
from scene_vlm_ros.vlm.engine import ErrorCode, QueryEngine, QueryRequest  # noqa: E402
from scene_vlm_ros.vlm.types import Task  # noqa: E402

SYNTHETIC = {"seeds": [0], "n_frames": 40, "width": 160, "height": 120, "max_questions_per_task": 6}
BUILD = {"n_frames": 4, "image_size_px": 112, "view_target_px": 32, "bev_target_px": 64, "synthetic": SYNTHETIC,
         "vision_only": {"synthetic_seeds": [1], "n_frames": 30, "width": 160, "height": 120}}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("training_chain")
    model_dir = build_tiny_qwen2vl(root / "tiny_qwen2vl", seed=0)
    vae_dir = build_tiny_vae(root / "tiny_vae", seed=0)
    build_yaml = root / "build.yaml"
    build_yaml.write_text(json.dumps({**BUILD, "output_dir": str(root / "data")}))
    # The real CLI entry point (in-process), as a user would run it.
    assert cli_main(["build-data", "--config", str(build_yaml), "--no-progress"]) == 0
    return {"root": root, "model": model_dir, "vae": vae_dir, "data": root / "data"}


def _fit_cfg(assets: dict[str, Path], out: str, **extra: object) -> FitConfig:
    overrides = [f"data_dir={assets['data']}", f"output_dir={assets['root'] / out}",
                 f"model.base_model_dir={assets['model']}", f"heads.vae_dir={assets['vae']}",
                 "heads.width=32", "heads.depth=1", "heads.num_heads=2", "mixed_precision=no",
                 "optim.lr=1e-3", "optim.heads_lr=3e-3", "optim.warmup_ratio=0.1", "log_every_steps=5",
                 "dataloader_workers=0"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_config(FitConfig, None, overrides)


def test_chain_losses_fall_export_loads_in_the_node_backend(assets: dict[str, Path]) -> None:
    cfg = _fit_cfg(assets, "run_chain", max_steps=30, save_every_steps=30)
    trainer = Trainer(cfg)
    ds = trainer.dataset
    probe_rows = [i for i, s in enumerate(ds.samples) if s["recon"] and s["answer"]][:2]
    probe = to_device(collate([ds[i] for i in probe_rows], trainer.pad_id), trainer.accelerator.device)
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = probe_losses(model, trainer.teacher, probe, cfg.heads)
    history = [trainer.train_step() for _ in range(cfg.max_steps)]
    after = probe_losses(model, trainer.teacher, probe, cfg.heads)
    for key in ("text", "view", "bev"):
        assert after[key] < 0.9 * before[key], (key, before[key], after[key])
    # Cross-view masking ran on every 4th optimizer step only; BEV on the non-grounding samples.
    assert [h["view_active"] > 0 for h in history[:8]] == [True, False, False, False] * 2 or all(
        h["masked_frames"] == 0 for i, h in enumerate(history) if i % 4)
    ckpt = trainer.save_checkpoint()
    assert read_checkpoint_marker(ckpt)["step"] == 30

    with pytest.raises(FileExistsError, match="not empty"):
        export_checkpoint(ckpt, assets["root"])
    assert cli_main(["export", "--checkpoint", str(ckpt), "--out", str(assets["root"] / "export")]) == 0
    out = assets["root"] / "export"
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not [k for k in keys if k.startswith(HEAD_PREFIXES)]
    heads = assets["root"] / "export-heads" / "heads.safetensors"
    with safe_open(str(heads), framework="pt") as f:
        assert any(k.startswith("bev_head.") for k in f.keys()) and "mask_token" in list(f.keys())
    meta = json.loads((out / EXPORT_METADATA).read_text())
    assert (meta["n_frames"], meta["image_size_px"], meta["prompt_profile"]) == (4, 112, "default")
    assert meta["prompt_version"].startswith("default-") and meta["config"]["heads"]["width"] == 32

    backend = make_backend("transformers", model_path=str(out), device="cpu", max_new_tokens=6)
    backend.load()
    build_cfg = from_dict(BuildDataConfig, {**BUILD, "output_dir": str(assets["data"])})
    built, _, _ = synthetic_scene(0, SYNTHETIC["n_frames"], SYNTHETIC["width"], SYNTHETIC["height"], build_cfg)
    engine = QueryEngine(backend, n_frames=meta["n_frames"], image_size_px=meta["image_size_px"],
                         max_new_tokens=6, prompt_profile=meta["prompt_profile"])
    result = engine.answer(QueryRequest("How many chairs are in the room?", Task.QA), built.snapshot,
                           time.monotonic() + 60.0)
    assert result.error_code == ErrorCode.SUCCESS, result.error_msg
    assert isinstance(result.answer, str)
    _export_answers_through_scene_vlm_run(out, meta, assets["root"])


def _export_answers_through_scene_vlm_run(export_dir: Path, meta: dict, root: Path) -> None:
    """The end of the chain as a robot runs it: `scene-vlm run` with model.backend=transformers loads the
    export, a player in another process replays a small room, and a real client gets SUCCESS from
    /scene_query."""
    pytest.importorskip("rclpy")
    import os
    import subprocess
    import sys

    from scene_vlm_interfaces.srv import SceneQuery
    from scene_vlm_ros.commands.make_bag import make_bag

    from .rosutil import ask_scene_query, fresh_domain, replay_in_own_process, stop_process

    bag = root / "room_for_node"
    make_bag(source="synthetic", seed=0, frames=30, out=bag, width=160, height=120, progress=False, overwrite=True)
    domain = fresh_domain()
    # No frame count, image size or prompt profile given: the node takes them from the export's
    # scene_vlm_export.json (query.prompt_profile auto, n_frames / image_size_px 0).
    sets = {"model.backend": "transformers", "model.path": str(export_dir), "model.device": "cpu",
            "model.max_new_tokens": 6, "query.timeout_s": 120.0, "mapping.max_rate_hz": 0.0}
    cmd = [sys.executable, "-c", "from scene_vlm_ros.cli import main; main()", "run"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    proc = subprocess.Popen(cmd, env={**os.environ, "ROS_DOMAIN_ID": str(domain)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = ask_scene_query(domain, SceneQuery.Request(question="How many chairs are in the room?",
                                                            task=SceneQuery.Request.QA), proc, timeout_s=120.0)
        assert first.error_code == SceneQuery.Response.NO_MAP_YET, (first.error_code, first.error_msg)
        replay_in_own_process(bag, domain, rate=1.0, wait_for=("/camera/depth/image_raw", "/odom"))
        resp = ask_scene_query(domain, SceneQuery.Request(question="How many chairs are in the room?",
                                                           task=SceneQuery.Request.QA), proc,
                               retry_codes=(SceneQuery.Response.NO_MAP_YET,), timeout_s=120.0)
        assert resp.error_code == SceneQuery.Response.SUCCESS, (resp.error_code, resp.error_msg)
    finally:
        stop_process(proc)
    log = proc.stdout.read() + proc.stderr.read()
    expected = f"prompt profile '{meta['prompt_profile']}' ({meta['n_frames']} frames, {meta['image_size_px']} px)"
    assert expected in log, log[-3000:]


def test_resume_reproduces_the_uninterrupted_losses_exactly(assets: dict[str, Path]) -> None:
    steps = 6
    # The uninterrupted run prefetches with a worker process; the split run loads in-process.
    full = fit(_fit_cfg(assets, "run_full", max_steps=steps, save_every_steps=steps, grad_accum_steps=2,
                        dataloader_workers=1), progress=False)
    cfg = _fit_cfg(assets, "run_split", max_steps=steps, save_every_steps=3, grad_accum_steps=2)
    first = fit(cfg, progress=False, stop_after_steps=3)
    assert first["steps"] == 3 and first["last_checkpoint"].endswith("checkpoint-0000003")
    second = fit(cfg, resume="latest", progress=False)
    assert second["steps"] == steps
    assert list((assets["root"] / "run_split" / "logs").rglob("events.out.tfevents.*"))  # TensorBoard
    resumed = first["history"] + second["history"]
    keys = ("loss", "text", "view", "bev", "lr")
    assert [[h[k] for k in keys] for h in resumed] == [[h[k] for k in keys] for h in full["history"]]


def test_lora_with_checkpointing_trains_adapters_only_and_exports_merged_weights(assets: dict[str, Path]) -> None:
    pytest.importorskip("peft")
    cfg = _fit_cfg(assets, "run_lora", max_steps=2, save_every_steps=2, **{"model.lora.enabled": "true",
                                                                            "model.lora.r": 4,
                                                                            "model.gradient_checkpointing": "true"})
    trainer = Trainer(cfg)
    model = trainer.accelerator.unwrap_model(trainer.model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("hf.")]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)
    assert model.hf.is_activation_checkpointing
    trainer.train_step()
    trainer.train_step()
    out = export_checkpoint(trainer.save_checkpoint(), assets["root"] / "export_lora")
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert not [k for k in f.keys() if "lora_" in k or "base_layer" in k]
    backend = make_backend("transformers", model_path=str(out), device="cpu")
    backend.load()  # refuses missing/mismatched weights, so a bad merge fails here


def test_text_only_training_when_the_heads_are_disabled(assets: dict[str, Path]) -> None:
    cfg = _fit_cfg(assets, "run_text", max_steps=2, save_every_steps=2, **{"heads.enabled": "false"})
    result = fit(cfg, progress=False)
    assert [sorted(h) for h in result["history"]] == [["answer_tokens", "loss", "lr", "step", "text"]] * 2
    assert result["history"][0]["loss"] == result["history"][0]["text"]


def test_directories_that_are_not_ours_get_clear_errors(assets: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(CheckpointError, match="not a scene-vlm-train checkpoint"):
        export_checkpoint(assets["model"], tmp_path / "out")
    with pytest.raises(CheckpointError, match="does not exist"):
        export_checkpoint(tmp_path / "missing", tmp_path / "out")
    assert cli_main(["export", "--checkpoint", str(assets["model"]), "--out", str(tmp_path / "o")]) == 2
    assert "not a scene-vlm-train checkpoint" in capsys.readouterr().err
    cfg = _fit_cfg(assets, "run_bad", max_steps=1, data_dir=str(assets["model"]))
    with pytest.raises(ValueError, match="not a build-data output"):
        fit(cfg, progress=False)
    with pytest.raises(ValueError, match="base_model_dir"):
        fit(_fit_cfg(assets, "run_bad2", max_steps=1, **{"model.base_model_dir": str(assets["data"])}),
            progress=False)
