"""bench-step: the sample shapes behind the 7B recipe's token counts, and a CPU smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scene_vlm_training", reason="install the training package: pip install -e training/")
pytest.importorskip("diffusers", reason="the reconstruction heads need diffusers")

from scene_vlm_training.bench import bench_step, synthetic_batch  # noqa: E402
from scene_vlm_training.cli import main  # noqa: E402


@pytest.mark.parametrize(("n_frames", "low", "high"), [(8, 2300, 2700), (32, 8300, 8900)])
def test_sample_shape_matches_the_recipe_token_counts(n_frames: int, low: int, high: int) -> None:
    # GPT4Scene at 512 px: about 2.5k tokens per sample with 8 frames and 8.6k with 32.
    batch = synthetic_batch(None, n_frames, 512, torch.device("cpu"), view_px=32, bev_px=32)
    n = int(batch["input_ids"].shape[1])
    assert low < n < high
    grid = batch["image_grid_thw"]
    assert grid.shape == (n_frames + 1, 3) and int((batch["mm_token_type_ids"] == 1).sum()) == int(
        grid.prod(dim=1).sum()) // 4


def test_tiny_cpu_smoke_run_reports_both_configurations(tmp_path: Path) -> None:
    figures = bench_step(arch="tiny", n_frames=2, image_px=84, steps=1, device="cpu", out=tmp_path / "b.json",
                         warmup=1)
    assert figures["step_s_text_only"] > 0 and figures["step_s_with_heads"] > 0
    assert json.loads((tmp_path / "b.json").read_text())["tokens_per_sample"] == figures["tokens_per_sample"]


def test_the_7b_bench_refuses_a_missing_gpu_clearly(capsys: pytest.CaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench-step", "--device", "cuda"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
