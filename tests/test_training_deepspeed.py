"""The shipped accelerate configs (DeepSpeed ZeRO-2/3, DDP) run the real fit on CPU (tiny model).

DeepSpeed 0.19 runs on a CPU-only host through its CPU accelerator (it JIT-builds its shared-memory
communication op on first use), so ``accelerate launch --config_file zero2.yaml|zero3.yaml`` is
exercised as shipped, overriding only the process count and mixed precision for this machine.
Slow: each launch starts a fresh interpreter with torch, transformers and DeepSpeed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("scene_vlm_training", reason="install the training package: pip install -e training/")
pytest.importorskip("deepspeed", reason="DeepSpeed is not installed")

from scene_vlm_training.cli import main as cli_main  # noqa: E402
from scene_vlm_training.export import export_checkpoint  # noqa: E402
from scene_vlm_training.fit import read_checkpoint_marker  # noqa: E402
from scene_vlm_training.model.vae import build_tiny_vae  # noqa: E402

from scene_vlm_ros.vlm.backends.tiny import build_tiny_qwen2vl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "scene_vlm_training" / "configs" / "accelerate"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ds")
    build_tiny_qwen2vl(root / "tiny")
    build_tiny_vae(root / "vae")
    (root / "build.yaml").write_text(json.dumps({
        "output_dir": str(root / "data"), "n_frames": 3, "image_size_px": 84, "view_target_px": 32,
        "bev_target_px": 32,
        "synthetic": {"seeds": [2], "n_frames": 30, "width": 128, "height": 96, "max_questions_per_task": 2},
    }))
    assert cli_main(["build-data", "--config", str(root / "build.yaml"), "--no-progress"]) == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize(("config", "launch_args"), [
    ("zero2.yaml", ["--num_processes", "1"]),
    ("zero3.yaml", ["--num_processes", "1"]),
    ("ddp.yaml", ["--num_processes", "2", "--cpu"]),  # two ranks over gloo
])
def test_distributed_config_trains_and_checkpoints(workdir: Path, config: str, launch_args: list[str]) -> None:
    out = workdir / f"run_{config.split('.')[0]}"
    fit_yaml = workdir / f"fit_{config}"
    fit_yaml.write_text(json.dumps({
        "data_dir": str(workdir / "data"), "output_dir": str(out), "mixed_precision": "no", "max_steps": 2,
        "save_every_steps": 2, "grad_accum_steps": 2, "model": {"base_model_dir": str(workdir / "tiny")},
        "heads": {"vae_dir": str(workdir / "vae"), "width": 32, "depth": 1, "num_heads": 2},
    }))
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    env = {**os.environ, "MASTER_PORT": str(29500 + (os.getpid() % 1000))}
    proc = subprocess.run(
        [accelerate, "launch", "--config_file", str(CONFIGS / config), *launch_args, "--mixed_precision", "no",
         "-m", "scene_vlm_training.cli", "fit", "--config", str(fit_yaml), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = out / "checkpoint-0000002"
    assert read_checkpoint_marker(ckpt)["step"] == 2
    if config.startswith("zero"):
        assert (ckpt / "accelerate" / "pytorch_model").is_dir()  # the DeepSpeed engine's own state
    export_checkpoint(ckpt, workdir / f"export_{config.split('.')[0]}")
