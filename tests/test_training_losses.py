"""Each training loss module on its own: shapes, masking, initialisation, what it may condition on."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scene_vlm_training", reason="install the training package: pip install -e training/")
pytest.importorskip("diffusers", reason="the reconstruction heads need diffusers")

import torch.nn.functional as F  # noqa: E402
from scene_vlm_training.losses.cross_view import (  # noqa: E402
    apply_frame_mask,
    choose_masked_frames,
    cross_view_loss,
    is_mask_step,
)
from scene_vlm_training.losses.denoiser import DiTDenoiser, grid_position_embedding, sinusoidal_embedding  # noqa: E402
from scene_vlm_training.losses.diffusion import CosineNoiseSchedule, masked_mse  # noqa: E402
from scene_vlm_training.losses.global_view import global_view_loss, nonblack_cell_mask  # noqa: E402
from scene_vlm_training.losses.pooling import AttentionPooler  # noqa: E402
from scene_vlm_training.losses.reconstruction import ReconstructionHead  # noqa: E402
from scene_vlm_training.losses.text import answer_token_loss  # noqa: E402

from scene_vlm_ros.vlm.model_inputs import IGNORE_INDEX  # noqa: E402


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------- text


def test_text_loss_is_the_cross_entropy_of_the_answer_tokens_only() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 7, 8)
    head = torch.nn.Linear(8, 11, bias=False)
    labels = torch.full((2, 7), IGNORE_INDEX)
    labels[0, 5:7] = torch.tensor([3, 4])
    labels[1, 6] = 9
    loss, n = answer_token_loss(hidden, labels, head)
    logits = head(hidden)
    manual = F.cross_entropy(torch.stack([logits[0, 4], logits[0, 5], logits[1, 5]]), torch.tensor([3, 4, 9]))
    assert int(n) == 3 and torch.allclose(loss, manual, atol=1e-6)
    # Hidden states after the last predicting position do not matter.
    hidden2 = hidden.clone()
    hidden2[0, 6] += 5.0
    hidden2[1, :5] += 5.0
    assert torch.allclose(answer_token_loss(hidden2, labels, head)[0], loss)


def test_text_loss_without_answer_tokens_is_zero_with_a_graph() -> None:
    hidden = torch.randn(1, 4, 8, requires_grad=True)
    loss, n = answer_token_loss(hidden, torch.full((1, 4), IGNORE_INDEX), torch.nn.Linear(8, 5))
    assert int(n) == 0 and float(loss.detach()) == 0.0
    loss.backward()
    assert hidden.grad is not None


# ------------------------------------------------------------------------------------- diffusion


def test_cosine_schedule_matches_the_closed_form() -> None:
    sched = CosineNoiseSchedule(1000)
    abar = sched.scheduler.alphas_cumprod
    assert abar.shape == (1000,)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 250, 500, 900):
        assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=2e-3)
    x0 = torch.randn(3, 5, 4)
    x_t, t, eps = sched.sample(x0, _gen(1))
    a = abar[t].view(-1, 1, 1)
    assert torch.allclose(x_t, a.sqrt() * x0 + (1 - a).sqrt() * eps, atol=1e-5)
    again = sched.sample(x0, _gen(1))
    assert torch.equal(again[1], t) and torch.equal(again[2], eps)


def test_masked_mse_counts_only_kept_cells_in_fp32() -> None:
    pred = torch.zeros(2, 3, 4, dtype=torch.bfloat16)
    target = torch.ones(2, 3, 4)
    target[:, 1] = 3.0
    mask = torch.tensor([[True, False, True], [True, False, False]])
    assert masked_mse(pred, target, mask).dtype == torch.float32
    assert float(masked_mse(pred, target, mask)) == pytest.approx(1.0)
    assert float(masked_mse(pred, target)) == pytest.approx((1 + 9 + 1) / 3)


# ------------------------------------------------------------------------------------- denoiser + pooler


def test_dit_starts_at_zero_and_keeps_shapes() -> None:
    torch.manual_seed(0)
    dit = DiTDenoiser(in_channels=16, grid=(3, 4), width=32, depth=2, num_heads=4)
    x = torch.randn(2, 12, 16)
    out = dit(x, torch.tensor([0, 999]), torch.randn(2, 12, 32))
    assert out.shape == (2, 12, 16) and torch.count_nonzero(out) == 0  # zero-initialised output layer
    # adaLN-Zero: every block is the identity at initialisation.
    h = torch.randn(2, 12, 32)
    assert torch.equal(dit.blocks[0](h, torch.randn(2, 12, 32)), h)
    with pytest.raises(ValueError, match=r"x_t must be \(B, 12, 16\)"):
        dit(torch.randn(2, 10, 16), torch.tensor([1, 2]), torch.randn(2, 10, 32))


def test_sinusoidal_embeddings() -> None:
    e = sinusoidal_embedding(torch.tensor([0.0, 3.0]), 8)
    assert e.shape == (2, 8) and torch.allclose(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    pos = grid_position_embedding(2, 3, 8)
    assert pos.shape == (6, 8) and len({tuple(r.tolist()) for r in pos}) == 6  # every cell distinct


def test_pooler_normalises_and_ignores_padding() -> None:
    torch.manual_seed(0)
    pool = AttentionPooler(hidden_size=8, width=16, n_queries=5, num_heads=4)
    mem = torch.randn(2, 6, 8)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    out = pool(mem, pad)
    assert out.shape == (2, 5, 16)
    mem2 = mem.clone()
    mem2[1, 4:] = 1000.0  # padding content is ignored
    assert torch.allclose(pool(mem2, pad)[1], out[1], atol=1e-6)
    # The non-affine LayerNorm makes the condition invariant to the hidden states' scale.
    assert torch.allclose(pool(mem * 50.0, pad), out, atol=1e-4)
    assert not any(p.requires_grad for p in pool.norm.parameters())


# ------------------------------------------------------------------------------------- cross view


def test_mask_schedule_and_frame_choice() -> None:
    assert [is_mask_step(s, 4) for s in range(9)] == [True, False, False, False] * 2 + [True]
    assert len(choose_masked_frames(8, 0.25, _gen())) == 2
    assert len(choose_masked_frames(32, 0.25, _gen())) == 8
    assert len(choose_masked_frames(2, 0.25, _gen())) == 1 and choose_masked_frames(1, 0.25, _gen()) == []
    assert choose_masked_frames(8, 0.25, _gen(3)) == choose_masked_frames(8, 0.25, _gen(3))


def test_apply_frame_mask_replaces_whole_images_and_reaches_the_token() -> None:
    feats = [torch.randn(4, 6), torch.randn(3, 6), torch.randn(5, 6)]
    token = torch.nn.Parameter(torch.randn(6))
    out = apply_frame_mask(feats, [1], token)
    assert torch.equal(out[0], feats[0]) and torch.equal(out[2], feats[2])
    assert out[1].shape == (3, 6) and torch.equal(out[1], token.detach().expand(3, 6))
    out[1].sum().backward()
    assert torch.equal(token.grad, torch.full((6,), 3.0))


def test_reconstruction_losses_shapes_and_training_signal() -> None:
    torch.manual_seed(0)
    head = ReconstructionHead(hidden_size=8, latent_channels=4, grid=(2, 2), width=16, depth=1, num_heads=2)
    frames = [torch.randn(5, 8), torch.randn(3, 8)]
    target = torch.randn(2, 4, 4)
    loss = cross_view_loss(head, frames, target, _gen())
    assert loss.ndim == 0 and loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float((torch.randn(2, 4, 4, generator=_gen_after_t(2)) ** 2).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="targets"):
        cross_view_loss(head, frames, torch.randn(3, 4, 4), _gen())
    loss.backward()
    assert head.denoiser.proj_out.weight.grad.abs().sum() > 0


def _gen_after_t(batch: int) -> torch.Generator:
    """The generator state after drawing ``batch`` timesteps (the eps draws come next)."""
    g = _gen()
    torch.randint(0, 1000, (batch,), generator=g)
    return g


def test_global_view_counts_only_nonblack_cells() -> None:
    bev = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    bev[0, :, :4, :4] = 90  # only the top-left quadrant has geometry
    cells = nonblack_cell_mask(bev, (2, 2))
    assert cells.tolist() == [[True, False, False, False]]
    torch.manual_seed(0)
    head = ReconstructionHead(hidden_size=8, latent_channels=4, grid=(2, 2), width=16, depth=1, num_heads=2)
    with torch.no_grad():  # a denoiser that predicts the constant 0.5 everywhere
        head.denoiser.proj_out.bias.fill_(0.5)
    loss = global_view_loss(head, [torch.randn(6, 8)], torch.randn(1, 4, 4), cells, _gen())
    eps = torch.randn(1, 4, 4, generator=_gen_after_t(1))
    assert float(loss) == pytest.approx(float(((0.5 - eps[0, 0]) ** 2).mean()), rel=1e-5)  # cell 0 only
    assert float(loss) != pytest.approx(float(((0.5 - eps) ** 2).mean()), rel=1e-3)
