"""Chat messages -> Qwen2-VL model inputs, one conversion for the node and for training.

The node's transformers backend (:mod:`scene_vlm_ros.vlm.backends.transformers_backend`) and the
offline training package (``scene_vlm_training``) both call :func:`build_model_inputs`, so a
fine-tuned model is trained on exactly the token sequence, image placeholders, image resampling and
``mm_token_type_ids`` that the robot will later feed it. Training adds the answer with
:func:`build_training_inputs`, which finds the answer's tokens from the chat template itself (the
prompt rendered with ``add_generation_prompt=True`` is a token prefix of the whole conversation),
never from hard-coded token ids.

The message helpers (:func:`normalise_messages`, :func:`cap_image_side`) need only numpy; torch,
transformers and Pillow are imported inside the functions that need them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .types import ModelError

_ROLES = ("system", "user", "assistant")

#: Label value that the cross-entropy ignores (PyTorch's default ``ignore_index``).
IGNORE_INDEX = -100


class MessageFormatError(ModelError, ValueError):
    """The chat messages do not follow the format documented in ``vlm/types.py``.

    A ModelError (so the query engine reports it like any other generation failure) and a
    ValueError (it is a caller bug, not a model fault).
    """


def normalise_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate chat messages and return them with every ``content`` as a list of parts.

    Args:
        messages: ``[{"role": "system"|"user"|"assistant", "content": str | [part, ...]}, ...]`` where a
            part is ``{"type": "text", "text": str}`` or ``{"type": "image", "image": ndarray}`` and an
            image is (H, W, 3) uint8 RGB (a (H, W) uint8 grey image is accepted and expanded to RGB).

    Returns:
        New list of new dicts (the caller's images are not copied); string content becomes one text part.

    Raises:
        MessageFormatError: naming the offending message/part index and what was expected.
    """
    if not isinstance(messages, list) or not messages:
        raise MessageFormatError("messages must be a non-empty list of {'role', 'content'} dicts")
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise MessageFormatError(f"message {index} must be a dict with 'role' and 'content'")
        role = message["role"]
        if role not in _ROLES:
            raise MessageFormatError(f"message {index}: role {role!r} is not one of {_ROLES}")
        content = message["content"]
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            parts = []
            for part_index, part in enumerate(content):
                parts.append(_check_part(part, f"message {index} part {part_index}"))
        else:
            raise MessageFormatError(f"message {index}: content must be a str or a list of parts, got {type(content)}")
        out.append({"role": role, "content": parts})
    return out


def _check_part(part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, dict) or part.get("type") not in ("text", "image"):
        raise MessageFormatError(f"{where}: expected {{'type': 'text'|'image', ...}}, got {part!r:.80}")
    if part["type"] == "text":
        if not isinstance(part.get("text"), str):
            raise MessageFormatError(f"{where}: a text part needs a str 'text'")
        return {"type": "text", "text": part["text"]}
    image = part.get("image")
    if not isinstance(image, np.ndarray):
        raise MessageFormatError(f"{where}: an image part needs 'image' as an np.ndarray (H, W, 3) uint8 RGB")
    if image.dtype != np.uint8:
        raise MessageFormatError(f"{where}: image dtype is {image.dtype}, expected uint8 RGB (scale/convert first)")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise MessageFormatError(f"{where}: image shape is {image.shape}, expected (H, W, 3) RGB")
    return {"type": "image", "image": image}


def cap_image_side(image: np.ndarray, max_side_px: int) -> np.ndarray:
    """Downscale an (H, W, 3) uint8 image so that its longer side is at most ``max_side_px``.

    Nearest-neighbour resampling, as GPT4Scene does for its 512 px frames and BEV: the object-ID
    markers stay crisp instead of being blurred into the background. Images already small enough
    are returned unchanged (same object).
    """
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= max_side_px:
        return image
    scale = max_side_px / float(longest)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    rows = np.minimum((np.arange(new_h) + 0.5) / scale, height - 1).astype(np.intp)
    cols = np.minimum((np.arange(new_w) + 0.5) / scale, width - 1).astype(np.intp)
    return np.ascontiguousarray(image[rows[:, None], cols[None, :]])


# --------------------------------------------------------------------------------------------
# Processor calls (need transformers' processor, torch and Pillow)
# --------------------------------------------------------------------------------------------


def template_messages_and_images(
    messages: list[dict[str, Any]], max_image_side_px: int
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Split chat messages into the chat template's input and the list of PIL images, in order.

    Every image part becomes ``{"type": "image"}`` (the template only needs to know an image goes
    there); its pixels, capped to ``max_image_side_px`` with nearest resampling, go to the returned
    list in the same order, so placeholders and images line up in the processor.
    """
    from PIL import Image

    images: list[Any] = []
    template_messages: list[dict[str, Any]] = []
    for message in normalise_messages(messages):
        parts: list[dict[str, Any]] = []
        for part in message["content"]:
            if part["type"] == "image":
                images.append(Image.fromarray(cap_image_side(part["image"], max_image_side_px), mode="RGB"))
                parts.append({"type": "image"})
            else:
                parts.append(part)
        template_messages.append({"role": message["role"], "content": parts})
    return template_messages, images


def _with_mm_token_type_ids(inputs: Any, image_token_id: int, video_token_id: int) -> Any:
    if "mm_token_type_ids" not in inputs:
        # Processors saved by older transformers do not emit it; derive it from the placeholder ids.
        import torch

        ids = inputs["input_ids"]
        type_ids = torch.zeros_like(ids)
        type_ids[ids == int(image_token_id)] = 1
        type_ids[ids == int(video_token_id)] = 2
        inputs["mm_token_type_ids"] = type_ids
    return inputs


def build_model_inputs(
    processor: Any,
    messages: list[dict[str, Any]],
    *,
    max_image_side_px: int,
    image_token_id: int,
    video_token_id: int,
) -> Any:
    """Chat messages -> the processor's BatchFeature for generation (CPU tensors, batch of one).

    Keys: ``input_ids`` / ``attention_mask`` (1, L), ``mm_token_type_ids`` (1, L) (0 text, 1 image,
    2 video; M-RoPE needs it), and with images ``pixel_values`` (patches, C*T*14*14) and
    ``image_grid_thw`` (n_images, 3). The text ends with the template's generation prompt.

    Raises:
        MessageFormatError: malformed messages (see :func:`normalise_messages`).
    """
    template_messages, images = template_messages_and_images(messages, max_image_side_px)
    text = processor.apply_chat_template(template_messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=images or None, return_tensors="pt")
    return _with_mm_token_type_ids(inputs, image_token_id, video_token_id)


class AnswerSpanError(ValueError):
    """The chat template does not render the prompt as a prefix of the prompt + answer conversation."""


def build_training_inputs(
    processor: Any,
    messages: list[dict[str, Any]],
    answer: str | None,
    *,
    max_image_side_px: int,
    image_token_id: int,
    video_token_id: int,
) -> Any:
    """Chat messages + the assistant's answer -> a BatchFeature with ``labels`` for the text loss.

    The input is the same conversation :func:`build_model_inputs` builds, followed by the answer
    as the assistant's turn. ``labels`` (1, L) is ``input_ids`` on the answer's tokens and on the
    template's end-of-turn token right after it (the model must learn to stop), and
    :data:`IGNORE_INDEX` everywhere else. The span is found from the chat template: the prompt
    rendered with ``add_generation_prompt=True`` must be a token prefix of the whole rendering,
    and the end-of-turn token is the first token the template writes after the answer text.
    ``answer=None`` (reconstruction-only samples) gives the generation prompt with no supervised
    token. Extra key ``answer_span`` = (start, end) token indices, end exclusive.

    Raises:
        AnswerSpanError: the template breaks the prefix property (a template that rewrites earlier
            turns when an assistant turn follows), or the answer is empty.
    """
    import torch

    template_messages, images = template_messages_and_images(messages, max_image_side_px)
    prompt_text = processor.apply_chat_template(template_messages, tokenize=False, add_generation_prompt=True)
    if answer is None:
        inputs = processor(text=[prompt_text], images=images or None, return_tensors="pt")
        inputs = _with_mm_token_type_ids(inputs, image_token_id, video_token_id)
        inputs["labels"] = torch.full_like(inputs["input_ids"], IGNORE_INDEX)
        n = int(inputs["input_ids"].shape[1])
        inputs["answer_span"] = (n, n)
        return inputs
    if not answer.strip():
        raise AnswerSpanError("the answer is empty; a supervised sample needs answer text")
    full_messages = [*template_messages, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    full_text = processor.apply_chat_template(full_messages, tokenize=False, add_generation_prompt=False)
    if not full_text.startswith(prompt_text + answer):
        raise AnswerSpanError(
            "the chat template does not render '<prompt with generation prompt><answer>' at the start of the "
            "whole conversation, so the answer tokens cannot be located; use a ChatML-style template"
        )
    closing = full_text[len(prompt_text) + len(answer) :]
    tokenizer = processor.tokenizer
    closing_ids = tokenizer(closing, add_special_tokens=False)["input_ids"] if closing else []
    inputs = processor(text=[full_text], images=images or None, return_tensors="pt")
    inputs = _with_mm_token_type_ids(inputs, image_token_id, video_token_id)
    prompt_only = processor(text=[prompt_text], images=images or None, return_tensors="pt")
    ids = inputs["input_ids"][0]
    start = int(prompt_only["input_ids"].shape[1])
    if not torch.equal(ids[:start], prompt_only["input_ids"][0]):
        raise AnswerSpanError("the prompt's tokens are not a prefix of the conversation's tokens (tokenizer merge)")
    # The answer ends where the template's closing text begins; keep its first token (end of turn).
    end = int(ids.shape[0]) - max(0, len(closing_ids) - 1)
    if end <= start:
        raise AnswerSpanError(f"no answer tokens found between {start} and {end}")
    labels = torch.full_like(inputs["input_ids"], IGNORE_INDEX)
    labels[0, start:end] = ids[start:end]
    inputs["labels"] = labels
    inputs["answer_span"] = (start, end)
    return inputs
