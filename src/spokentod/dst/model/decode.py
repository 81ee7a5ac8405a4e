"""Greedy decoding from prompt embeddings that drops each row once it has said eos.

Why not ``generate()``: it keeps every row of the batch in every step until the longest one finishes, and
multi-turn tracking batches whole test sets (all their dialogues side by side), so on a CPU a large part of
the decoding steps' work went to rows already finished (43 % of the row-steps when the E2E tracker read source_test at batch 16). Here
a finished row leaves the KV cache (``Cache.batch_select_indices``). The outputs are the same as
``generate(do_sample=False)`` with the same logits processor (tests/dst/test_dst_decode.py checks it):
left padding, position ids from the attention mask, logits of the last position only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from spokentod.backends.llm._prefix_cache import cache_kwarg

Processor = Callable[[Tensor, Tensor], Tensor]


@torch.no_grad()
def greedy(llm: nn.Module, embeds: Tensor, mask: Tensor, max_new_tokens: int, eos: int,
           processor: Processor | None = None) -> list[list[int]]:
    """Token ids generated for each row of left-padded ``embeds`` [B, L, H] (``mask`` [B, L]), eos included
    when said. ``processor(generated_ids, scores)`` sees only the generated tokens, as in generate()."""
    mask = mask.long()
    rows = torch.arange(embeds.shape[0], device=embeds.device)  # original row of each live row
    out: list[list[int]] = [[] for _ in range(embeds.shape[0])]
    said = torch.zeros(embeds.shape[0], 0, dtype=torch.long, device=embeds.device)
    try:
        kv = {cache_kwarg(): DynamicCache(config=llm.config)}
    except TypeError:  # transformers 4.x: no config argument
        kv = {cache_kwarg(): DynamicCache()}
    cache = next(iter(kv.values()))
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    step = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
               logits_to_keep=1, **kv)
    for n in range(max_new_tokens):
        scores = step.logits[:, -1].float()
        if processor is not None:
            scores = processor(said, scores)
        token = scores.argmax(-1)
        for r, t in zip(rows.tolist(), token.tolist()):
            out[r].append(t)
        live = token != eos
        if n == max_new_tokens - 1 or not live.any():
            break
        said = torch.cat([said, token[:, None]], 1)
        if not live.all():
            keep = live.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            mask, said, token, rows = mask[keep], said[keep], token[keep], rows[keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], 1)
        step = llm(input_ids=token[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                   use_cache=True, logits_to_keep=1, **kv)
    return out
