"""The training package's boundaries: imports (never scene_vlm_ros.ros), typed configs, the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("scene_vlm_training", reason="install the training package: pip install -e training/")

from scene_vlm_training.config import (  # noqa: E402
    BuildDataConfig,
    ConfigError,
    FitConfig,
    from_dict,
    load_config,
    save_config,
)

TRAINING_SRC = Path(__file__).resolve().parents[1] / "training" / "scene_vlm_training"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_module_imports_the_ros_layer() -> None:
    files = sorted(TRAINING_SRC.rglob("*.py"))
    assert len(files) >= 15
    offenders = {
        str(f.relative_to(TRAINING_SRC)): sorted(m for m in _imported_modules(f)
                                                 if m.startswith(("scene_vlm_ros.ros", "rclpy")))
        for f in files
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_importing_every_module_loads_neither_rclpy_nor_the_ros_layer() -> None:
    modules = [
        "scene_vlm_training." + ".".join(f.relative_to(TRAINING_SRC).with_suffix("").parts)
        for f in sorted(TRAINING_SRC.rglob("*.py")) if f.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m == 'rclpy' or m.startswith('scene_vlm_ros.ros')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unknown_config_key_names_the_path_and_the_known_keys() -> None:
    with pytest.raises(ConfigError, match=r"optim\.learning_rate.*known keys: lr"):
        from_dict(FitConfig, {"data_dir": "d", "optim": {"learning_rate": 1e-5}})
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(BuildDataConfig, {"synthetic": {"seeds": [0]}, "frames": 8})


def test_wrong_types_and_values_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="heads.w_view: expected a number"):
        from_dict(FitConfig, {"heads": {"w_view": "one"}})
    with pytest.raises(ConfigError, match="base_model_dir is required"):
        from_dict(FitConfig, {"data_dir": "d"}).validate()
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("data_dir: d\nmodel: {base_model_dir: m}\nheads: {vae_dir: v, width: 30, num_heads: 4}\n")
    with pytest.raises(ConfigError, match="divisible"):
        load_config(FitConfig, cfg)
    with pytest.raises(ConfigError, match="unknown prompt profile"):
        load_config(BuildDataConfig, None, ["prompt_profile=nope", "synthetic.seeds=[1]"])


def test_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(FitConfig, None, ["data_dir=d", "model.base_model_dir=m", "heads.vae_dir=v", "optim.lr=2e-6",
                                        "model.lora.enabled=true"])
    path = save_config(cfg, tmp_path / "c.yaml")
    again = load_config(FitConfig, path)
    assert again == cfg and again.optim.lr == 2e-6 and again.model.lora.enabled


def test_cli_reports_a_config_error_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "build.yaml"
    cfg.write_text("synthetic: {seeds: [0]}\nnum_frames: 8\n")
    proc = subprocess.run([sys.executable, "-m", "scene_vlm_training.cli", "build-data", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown config key(s) num_frames" in proc.stderr and "Traceback" not in proc.stderr


CONFIGS = TRAINING_SRC / "configs"


@pytest.mark.parametrize("name", ["fit_7b_zero3.yaml", "fit_lora_1gpu.yaml"])
def test_shipped_fit_configs_parse_and_validate(name: str) -> None:
    cfg = load_config(FitConfig, CONFIGS / name)
    assert cfg.heads.mask_every_n_steps == 4 and cfg.heads.mask_ratio == 0.25
    assert cfg.mixed_precision == "bf16" and cfg.model.freeze_vision


def test_shipped_build_config_parses_and_validates() -> None:
    cfg = load_config(BuildDataConfig, CONFIGS / "build_data.yaml")
    assert cfg.iou_threshold == 0.75 and {b.kind for b in cfg.benchmarks} == {
        "scanrefer", "multi3drefer", "scanqa", "sqa3d", "scan2cap"}


def test_shipped_accelerate_configs_point_at_existing_deepspeed_files() -> None:
    import yaml

    repo = TRAINING_SRC.parents[1]
    for path in sorted((CONFIGS / "accelerate").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        ds = (data.get("deepspeed_config") or {}).get("deepspeed_config_file")
        if data["distributed_type"] == "DEEPSPEED":
            assert ds and (repo / ds).is_file(), path.name


def test_cli_lists_the_shipped_configs(capsys: pytest.CaptureFixture) -> None:
    from scene_vlm_training.cli import main

    assert main(["configs"]) == 0
    listed = capsys.readouterr().out.split()
    assert str(CONFIGS / "deepspeed" / "zero3.json") in listed and all(Path(p).is_file() for p in listed)
