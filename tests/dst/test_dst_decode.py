"""decode.greedy (drops finished rows from the batch) against transformers' generate() on a tiny random Llama."""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList

from spokentod.dst.model.decode import greedy
from spokentod.dst.model.speechdst import SpeechDST, no_runaway, stack_sequences

N = 24


def _reference(llm, emb, mask, eos, pad) -> list[list[int]]:
    out = llm.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=N, do_sample=False, eos_token_id=eos,
                       pad_token_id=pad, logits_processor=LogitsProcessorList([no_runaway]))
    rows = []
    for seq in out.tolist():
        rows.append(seq[: seq.index(eos) + 1] if eos in seq else seq)
    return rows


def test_greedy_matches_generate_while_rows_finish_at_different_steps(tiny_dst_config):
    torch.manual_seed(0)
    model = SpeechDST.build(tiny_dst_config(), feature_dim=16).eval()
    g = torch.Generator().manual_seed(3)
    feats = [torch.randn(n, 16, generator=g) for n in (90, 20, 51, 33, 70)]
    prompts = [model.dst_prompt([("user", "hi"), ("agent", "how can i help?")]), model.dst_prompt([]),
               model.dst_prompt([("user", "a much longer history line " * 3)]), model.dst_prompt([("user", "x")]),
               model.dst_prompt([], {"hotel": {"area": "north"}})]
    with torch.no_grad():
        p, n = model.prefix("speech", feats)
        emb, mask, _ = stack_sequences(model._sequences(p, n, prompts, None), left=True)
        free = _reference(model.llm, emb, mask, eos=-1 % model.llm.config.vocab_size, pad=model.pad)
        # an "eos" that some rows say early and others late or never: rows leave the batch at different steps
        for eos in dict.fromkeys(t for row in free for t in row[1:N - 2]):
            ref = _reference(model.llm, emb, mask, eos, model.pad)
            if len({len(r) for r in ref}) >= 3:
                break
        else:
            raise AssertionError("no token splits the rows' lengths; pick another seed")
        ours = greedy(model.llm, emb, mask, N, eos, no_runaway)
    assert ours == ref
    assert min(map(len, ours)) < N and max(map(len, ours)) > min(map(len, ours))  # pruning happened
