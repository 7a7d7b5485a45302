"""Build a tiny, randomly initialised Qwen2-VL checkpoint directory for tests and demos.

No model hub is reachable on CI and dev machines, yet the transformers backend must be exercised
through its real loading path. This module writes a *standard* Hugging Face Qwen2-VL checkpoint
directory (``config.json`` with ``model_type: qwen2_vl``, ``model.safetensors``, tokenizer files,
``preprocessor_config.json``, a chat template) that is laid out like a real Qwen2-VL / GPT4Scene
checkpoint, only with a few hundred thousand random parameters instead of seven billion.

Everything is made locally: the tokenizer is a byte-level BPE over the 256 byte symbols plus a few
merges and Qwen2-VL's special tokens, so any text (``<OBJ012>``, questions, answers) tokenizes.
Answers of the random model are meaningless; the point is that loading, templating, image
processing, M-RoPE and generation are the real code.

Heavy imports (torch, transformers, tokenizers) happen inside :func:`build_tiny_qwen2vl`.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: Qwen2-VL's special tokens (the names the processor and the chat template rely on).
QWEN2VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: A ChatML chat template with Qwen2-VL's vision placeholders. Each image content part becomes
#: ``<|vision_start|><|image_pad|><|vision_end|>``; the processor then repeats ``<|image_pad|>``
#: once per merged vision patch. Newlines are emitted as expressions so whitespace control cannot
#: swallow them.
TINY_CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part -%}"
    "{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- endif -%}"
)

# A handful of BPE merges so the tokenizer is a real (if tiny) BPE, biased toward the object-ID
# syntax the prompts and answers use.
_MERGES: tuple[tuple[str, str], ...] = (("O", "B"), ("OB", "J"), ("<", "OBJ"), ("Ġ", "t"), ("h", "e"), ("Ġt", "he"))


def _byte_level_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary ``{symbol: id}`` of the 256 byte-level symbols plus the merged tokens, and the merges."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    for left, right in _MERGES:
        vocab.setdefault(left + right, len(vocab))
    return vocab, list(_MERGES)


def build_tiny_qwen2vl(out_dir: Path, seed: int = 0, model_type: str = "qwen2_vl") -> Path:
    """Write a tiny random Qwen2-VL (or Qwen2.5-VL) checkpoint directory and return its path.

    Args:
        out_dir: directory to create (parents too); existing files of the same names are overwritten.
        seed: torch seed for the random weights (same seed -> identical weights).
        model_type: ``"qwen2_vl"`` (GPT4Scene's base) or ``"qwen2_5_vl"`` (windowed-attention vision
            tower with SwiGLU MLPs; same tokenizer, processor and M-RoPE layout).

    Returns:
        ``out_dir`` as a Path; load it with ``TransformersBackend(out_dir).load()``.

    Sizes: text hidden 64, 2 decoder layers, 4 heads (2 KV heads), vision depth 2 with embed dim 32,
    vocabulary of ~300 tokens. Images are resized by the processor to 28x28..224x224 px
    (``min_pixels``/``max_pixels``) so a test with a few images stays in the tens of milliseconds.
    """
    if model_type not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"model_type {model_type!r} must be 'qwen2_vl' or 'qwen2_5_vl'")
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )
    from transformers import logging as hf_logging

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    vocab, merges = _byte_level_vocab()
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        model_max_length=4096,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN2VL_SPECIAL_TOKENS)})
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    token_id = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN2VL_SPECIAL_TOKENS}
    # Round the embedding table up to a multiple of 64 the way real checkpoints pad it.
    vocab_size = ((len(tokenizer) + 63) // 64) * 64

    head_dim = 64 // 4
    if model_type == "qwen2_vl":
        config_cls, model_cls, processor_cls = Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
        vision_config: dict[str, object] = {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,  # the merger projects vision features to the text hidden size
            "num_heads": 2,
            "mlp_ratio": 2,
        }
    else:
        config_cls, model_cls, processor_cls = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
        vision_config = {
            "depth": 2,
            "hidden_size": 32,  # Qwen2.5-VL names the vision width hidden_size ...
            "out_hidden_size": 64,  # ... and the merger's output (= text hidden size) out_hidden_size
            "intermediate_size": 64,
            "num_heads": 2,
            "window_size": 56,  # two merged patches: windowed attention really splits small images
            "fullatt_block_indexes": [1],
        }
    vision_config.update({"patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2})
    config = config_cls(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "max_window_layers": 2,
            # M-RoPE splits the rotary half-dimension into (temporal, height, width) sections.
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": token_id["<|endoftext|>"],
            "eos_token_id": token_id["<|im_end|>"],
            "pad_token_id": token_id["<|endoftext|>"],
        },
        vision_config=vision_config,
        image_token_id=token_id["<|image_pad|>"],
        video_token_id=token_id["<|video_pad|>"],
        vision_start_token_id=token_id["<|vision_start|>"],
        vision_end_token_id=token_id["<|vision_end|>"],
    )
    if 2 * sum(config.text_config.rope_parameters["mrope_section"]) != head_dim:
        raise ValueError("tiny config: mrope_section must sum to head_dim / 2")

    torch.manual_seed(seed)
    model = model_cls(config)
    model.generation_config.eos_token_id = [token_id["<|im_end|>"], token_id["<|endoftext|>"]]
    model.generation_config.pad_token_id = token_id["<|endoftext|>"]
    model.generation_config.do_sample = False

    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=224 * 224)
    video_processor = Qwen2VLVideoProcessor(min_pixels=28 * 28, max_pixels=224 * 224)
    processor = processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=TINY_CHAT_TEMPLATE,
    )

    # Saving a randomly initialised model logs generation-config notes that are noise here.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
    finally:
        hf_logging.set_verbosity(verbosity)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("wrote tiny random %s (%d parameters, vocab %d) to %s", model_type, n_params, vocab_size, out_dir)
    return out_dir
