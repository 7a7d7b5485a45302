"""The wrapped model: answer span from the chat template, frozen vision, what each head may see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scene_vlm_training", reason="install the training package: pip install -e training/")
pytest.importorskip("diffusers", reason="the reconstruction heads need diffusers")

from scene_vlm_training.cli import main as cli_main  # noqa: E402
from scene_vlm_training.config import FitConfig, load_config  # noqa: E402
from scene_vlm_training.data import store  # noqa: E402
from scene_vlm_training.data.dataset import collate  # noqa: E402
from scene_vlm_training.fit import Trainer  # noqa: E402
from scene_vlm_training.model.vae import build_tiny_vae  # noqa: E402
from scene_vlm_training.model.wrapper import ReconTargets  # noqa: E402
from scene_vlm_training.step import recon_targets, step_generator, to_device  # noqa: E402

from scene_vlm_ros.vlm.backends.tiny import build_tiny_qwen2vl  # noqa: E402
from scene_vlm_ros.vlm.model_inputs import (  # noqa: E402
    IGNORE_INDEX,
    AnswerSpanError,
    build_model_inputs,
    build_training_inputs,
)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    root = tmp_path_factory.mktemp("model")
    build_tiny_qwen2vl(root / "tiny")
    build_tiny_vae(root / "vae")
    (root / "b.yaml").write_text(json.dumps({
        "output_dir": str(root / "data"), "n_frames": 4, "image_size_px": 84, "view_target_px": 32,
        "bev_target_px": 32,
        "synthetic": {"seeds": [0], "n_frames": 40, "width": 128, "height": 96, "max_questions_per_task": 3}}))
    assert cli_main(["build-data", "--config", str(root / "b.yaml"), "--no-progress"]) == 0
    cfg = load_config(FitConfig, None, [f"data_dir={root / 'data'}", f"output_dir={root / 'run'}",
                                        f"model.base_model_dir={root / 'tiny'}", f"heads.vae_dir={root / 'vae'}",
                                        "heads.width=32", "heads.depth=1", "heads.num_heads=2", "mixed_precision=no"])
    return Trainer(cfg)


def _batch(trainer: Trainer, task_filter: tuple[str, ...]) -> dict:
    rows = [i for i, s in enumerate(trainer.dataset.samples) if s["task"] in task_filter][:1]
    return to_device(collate([trainer.dataset[i] for i in rows], trainer.pad_id), trainer.accelerator.device)


def test_answer_span_comes_from_the_chat_template(trainer: Trainer) -> None:
    ds = trainer.dataset
    sample = next(s for s in ds.samples if s["task"] == "grounding")
    messages = store.sample_messages(ds.root, sample)
    kw = dict(max_image_side_px=84, image_token_id=ds.image_token_id, video_token_id=ds.video_token_id)
    inputs = build_training_inputs(trainer.processor, messages, sample["answer"], **kw)
    start, end = inputs["answer_span"]
    supervised = inputs["labels"][0][inputs["labels"][0] != IGNORE_INDEX]
    assert trainer.processor.tokenizer.decode(supervised) == sample["answer"] + "<|im_end|>"
    prompt = build_model_inputs(trainer.processor, messages, **kw)
    assert start == prompt["input_ids"].shape[1]  # the node's generation prompt is the exact prefix
    assert torch.equal(inputs["input_ids"][0, :start], prompt["input_ids"][0])
    assert torch.equal(inputs["mm_token_type_ids"][0, :start], prompt["mm_token_type_ids"][0])
    none = build_training_inputs(trainer.processor, messages, None, **kw)
    assert (none["labels"] == IGNORE_INDEX).all()
    original = trainer.processor.chat_template
    trainer.processor.chat_template = original.replace("message['role'] + '\\n' }}", "message['role'] + ':' }}A")
    try:
        with pytest.raises(AnswerSpanError, match="cannot be located"):
            build_training_inputs(trainer.processor, messages, sample["answer"], **kw)
    finally:
        trainer.processor.chat_template = original


def test_vision_tower_and_merger_are_frozen_and_heads_train(trainer: Trainer) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".visual." in n)
    assert any(".visual.merger." in n for n, _ in model.named_parameters())
    assert model.mask_token.requires_grad and all(p.requires_grad for p in model.bev_head.parameters())
    assert any(p.requires_grad for n, p in model.named_parameters() if "language_model" in n)


def _losses(model, batch, targets, seed=3) -> dict:  # noqa: ANN001
    with torch.no_grad():
        return model(batch, targets, step_generator(seed, 0, 0))[1]


def test_bev_loss_sees_the_frames_never_the_bev_image(trainer: Trainer) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    saved = {k: v.clone() for k, v in model.bev_head.state_dict().items()}
    with torch.no_grad():  # a trained-looking head: the zero-initialised output would ignore its condition
        for p in model.bev_head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    try:
        _check_bev_conditioning(trainer, model)
    finally:
        model.bev_head.load_state_dict(saved)


def _check_bev_conditioning(trainer: Trainer, model) -> None:  # noqa: ANN001
    batch = _batch(trainer, ("qa", "spatial"))
    targets = recon_targets(batch, trainer.teacher, trainer.cfg.heads, 1, step_generator(0, 1, 0))  # no masking
    base = _losses(model, batch, targets)
    # Change the BEV image's pixels (its patches are the last image's): the BEV loss cannot move,
    # the text loss (which reads the BEV) does.
    grid = batch["image_grid_thw"]
    n_bev = int(grid[-1].prod())
    changed = dict(batch, pixel_values=batch["pixel_values"].clone())
    changed["pixel_values"][-n_bev:] = torch.randn_like(changed["pixel_values"][-n_bev:])
    after = _losses(model, changed, targets)
    assert after["bev"] == base["bev"] and after["text"] != base["text"]
    # Changing a frame's pixels does move the BEV loss.
    n_first = int(grid[0].prod())
    changed["pixel_values"][:n_first] = torch.randn_like(changed["pixel_values"][:n_first])
    assert _losses(model, changed, targets)["bev"] != base["bev"]


def test_a_masked_frame_contributes_nothing_but_its_position(trainer: Trainer) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    batch = _batch(trainer, ("qa", "spatial"))
    targets = recon_targets(batch, trainer.teacher, trainer.cfg.heads, 0, step_generator(0, 0, 0))
    (masked,) = targets.masked
    assert len(masked) == 1  # 25% of 4 frames
    base = _losses(model, batch, targets)
    grid = batch["image_grid_thw"]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), grid.prod(dim=1).cumsum(0)])
    f = masked[0]
    changed = dict(batch, pixel_values=batch["pixel_values"].clone())
    changed["pixel_values"][offsets[f]:offsets[f + 1]] = torch.randn_like(
        changed["pixel_values"][offsets[f]:offsets[f + 1]])
    after = _losses(model, changed, targets)
    assert (after["text"], after["view"], after["bev"]) == (base["text"], base["view"], base["bev"])


def test_grounding_samples_run_both_heads_with_zero_weight(trainer: Trainer) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model).train()
    batch = _batch(trainer, ("grounding",))
    gen = step_generator(0, 0, 0)
    targets = recon_targets(batch, trainer.teacher, trainer.cfg.heads, 0, gen)  # a mask step
    assert targets.masked == [[]]  # grounding: never masked
    model.zero_grad(set_to_none=True)
    loss, logs = model(batch, targets, gen)
    assert logs["view_active"] == 0.0 and logs["bev_active"] == 0.0
    assert float(loss.detach()) == pytest.approx(logs["text"], rel=1e-6)
    loss.backward()
    for head in (model.view_head, model.bev_head):  # in the graph (DDP/ZeRO-safe), with zero gradient
        grads = [p.grad for p in head.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and all(float(g.abs().sum()) == 0.0 for g in grads)
    assert model.mask_token.grad is not None
    assert isinstance(targets, ReconTargets)


def test_a_padded_batch_gives_the_token_weighted_mean_of_its_samples(trainer: Trainer) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    ds = trainer.dataset
    rows = [i for i, s in enumerate(ds.samples) if s["task"] in ("qa", "spatial")]
    first = ds[rows[0]]
    second = next(ds[i] for i in rows[1:] if ds[i]["input_ids"].shape != first["input_ids"].shape)
    items = [first, second]  # different lengths: the shorter one is right-padded
    singles = []
    for it in items:
        batch = to_device(collate([it], trainer.pad_id), trainer.accelerator.device)
        singles.append(_losses(model, batch, None))
    pair = to_device(collate(items, trainer.pad_id), trainer.accelerator.device)
    assert pair["input_ids"].shape[0] == 2
    both = _losses(model, pair, None)
    n = [s["answer_tokens"] for s in singles]
    expected = (n[0] * singles[0]["text"] + n[1] * singles[1]["text"]) / (n[0] + n[1])
    assert both["answer_tokens"] == sum(n) and both["text"] == pytest.approx(expected, rel=1e-4)


def test_qwen2_5_vl_trains_through_the_same_wrapper(trainer: Trainer, tmp_path: Path) -> None:
    base = build_tiny_qwen2vl(tmp_path / "tiny25", model_type="qwen2_5_vl")
    cfg = trainer.cfg
    other = load_config(FitConfig, None, [f"data_dir={cfg.data_dir}", f"output_dir={tmp_path / 'run'}",
                                          f"model.base_model_dir={base}", f"heads.vae_dir={cfg.heads.vae_dir}",
                                          "heads.width=32", "heads.depth=1", "heads.num_heads=2",
                                          "mixed_precision=no", "dataloader_workers=0"])
    t25 = Trainer(other)
    assert t25.accelerator.unwrap_model(t25.model).hf.config.model_type == "qwen2_5_vl"
    logs = t25.train_step()  # step 0 masks frames: features swapped before Qwen2.5-VL's windowed LM input
    assert logs["masked_frames"] >= 1 and all(torch.isfinite(torch.tensor(v)) for v in logs.values())
