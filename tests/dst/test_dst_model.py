"""SpeechDST on a tiny random Llama (the SmolLM2 tokenizer): shapes, masks, phases, learning, batch invariance."""

from __future__ import annotations

import pytest
import torch

from spokentod.dst.model.speechdst import BF16_PAD_MULTIPLE, SpeechDST, stack_sequences

FEAT = 16



@pytest.fixture()
def model(tiny_dst_config):
    torch.manual_seed(0)
    return SpeechDST.build(tiny_dst_config(), feature_dim=FEAT)


def feats(*lengths: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, FEAT, generator=g) for n in lengths]


def test_connector_downsamples_six_times_and_ignores_padding(model):
    model.eval()
    fs = feats(100, 37, 6)
    emb, lengths = model.prefix("speech", fs)
    assert lengths.tolist() == [17, 7, 1]  # ceil(ceil(n/3)/2)
    assert emb.shape == (3, 17, model.llm.get_input_embeddings().embedding_dim)
    for i, f in enumerate(fs):  # each row equals that utterance alone: padding never leaks in
        alone, n = model.prefix("speech", [f])
        assert int(n) == int(lengths[i])
        torch.testing.assert_close(emb[i, : int(n)], alone[0], atol=1e-5, rtol=1e-5)


def test_text_prefix_modes(model):
    texts = ["i need a cheap hotel in the north", "taxi please"]
    ids = [model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    for mode in ("text_encoder", "text_direct"):
        emb, lengths = model.prefix(mode, texts=texts)
        assert lengths.tolist() == [len(x) for x in ids]
        assert emb.shape == (2, max(map(len, ids)), 32)
    emb, lengths = model.prefix("none", texts=texts)
    assert emb.shape[1] == 0 and lengths.tolist() == [0, 0]
    with pytest.raises(ValueError, match="needs texts"):
        model.prefix("text_encoder")


def test_sequences_and_masks(model):
    prefix, plen = model.prefix("speech", feats(30, 12))
    prompts, targets = ["\nhistory\n", "\na longer history here\n"], ['{"a": 1}', "x"]
    seqs = model._sequences(prefix, plen, prompts, targets)
    for (e, lab), p, t, n in zip(seqs, prompts, targets, plen.tolist()):
        p_ids, t_ids = model._ids([p])[0], model._ids([t])[0]
        assert e.shape[0] == len(model.bos) + n + len(p_ids) + len(t_ids) + 1
        assert lab[lab != -100].tolist() == t_ids + [model.eos]  # loss only on target + eos
    emb, mask, _ = stack_sequences(seqs, left=True)
    lens = [len(e) for e, _ in seqs]
    assert mask.sum(1).tolist() == lens and mask[0, -1] == 1 and mask[1, -1] == 1  # left padded
    assert (emb[mask == 0] == 0).all()
    _, mask_r, _ = stack_sequences(seqs, left=False)
    assert mask_r[:, 0].tolist() == [1, 1]


def test_phases_choose_trainable_parameters(model):
    model.set_phase("asr")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("connector.") for n in trainable)
    model.set_phase("dst")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any(n.startswith("text_encoder.") for n in trainable)
    assert all(n.startswith(("connector.", "text_encoder.")) or "lora_" in n for n in trainable)


def test_phase2_step_moves_only_lora_connector_and_text_encoder(model):
    model.set_phase("dst")
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    sp, sl = model.prefix("speech", feats(40, 25))
    tp, tl = model.prefix("text_encoder", texts=["book a taxi", "a train to cambridge"])
    loss = model.loss(sp, sl, ["\nh\n"] * 2, ["a", "b"]) + model.loss(tp, tl, ["\nh\n"] * 2, ["c", "d"])
    loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("lora_B" in n for n in changed) and any(n.startswith("text_encoder.") for n in changed)
    assert any(n.startswith("connector.") for n in changed)
    assert all(n.startswith(("connector.", "text_encoder.")) or "lora_" in n for n in changed)


def test_loss_falls_on_a_small_batch(model):
    model.set_phase("dst")
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    fs = feats(50, 33)
    prompts = [model.dst_prompt([("agent", "hello")]), model.dst_prompt([])]
    targets = ['{"transcript": "hi", "state": {}}', '{"transcript": "taxi", "state": {"taxi": {"leaveat": "10:00"}}}']
    losses = []
    for _ in range(40):
        opt.zero_grad()
        p, n = model.prefix("speech", fs)
        loss = model.loss(p, n, prompts, targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_frozen_llm_stored_in_bf16_gives_the_autocast_loss_and_gradients_exactly(model):
    # Autocast multiplies by bf16 copies of the weights anyway; storing the frozen ones in bf16 only stops
    # the copying. Same loss and same LoRA gradients, bit for bit; trained weights, embeddings stay float32.
    model.set_phase("dst")
    model.eval()
    fs = feats(50, 33)
    prompts = [model.dst_prompt([("agent", "hello")]), model.dst_prompt([])]
    targets = ['{"transcript": "hi", "state": {}}', '{"transcript": "taxi", "state": {"taxi": {"area": "east"}}}']
    lora = next(p for name, p in model.llm.named_parameters() if "lora_A" in name)

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            p, n = model.prefix("speech", fs)
            loss = model.loss(p, n, prompts, targets)
        loss.backward()
        return loss.detach(), lora.grad.clone()

    model.pad_multiple = 64  # as bf16 training pads (below: the same shapes on both sides)
    loss, grad = step()
    q = model.llm.base_model.model.model.layers[0].self_attn.q_proj
    assert q.base_layer.weight.dtype == torch.float32
    assert model.store_frozen_linears(torch.bfloat16) == 2 * 7  # q k v o gate up down, 2 layers
    assert q.base_layer.weight.dtype == torch.bfloat16 and q.lora_A["default"].weight.dtype == torch.float32
    assert model.llm.get_input_embeddings().weight.dtype == torch.float32
    assert model.llm.get_output_embeddings().weight.dtype == torch.float32
    loss2, grad2 = step()
    assert torch.equal(loss, loss2) and torch.equal(grad, grad2)


def test_a_lora_wrapped_output_head_stays_float32(tiny_dst_config):
    # lm_head in target_modules: peft wraps the head, and its base_layer Linear must still be skipped
    cfg = tiny_dst_config()
    cfg.lora.target_modules = ["q_proj", "v_proj", "lm_head"]
    model = SpeechDST.build(cfg, feature_dim=FEAT)
    head = model.llm.get_output_embeddings()
    assert head.base_layer.weight is head.weight  # the wrapper, as get_output_embeddings returns it
    assert model.store_frozen_linears(torch.bfloat16) == 2 * 7
    assert head.weight.dtype == torch.float32


def test_padding_a_batch_to_a_multiple_leaves_the_loss(model):
    # bf16 training pads every batch's length to BF16_PAD_MULTIPLE: masked, unlabelled positions only.
    model.set_phase("dst")
    model.eval()
    p, n = model.prefix("speech", feats(50, 33))
    prompts = [model.dst_prompt([("agent", "hello")]), model.dst_prompt([])]
    targets = ['{"transcript": "hi", "state": {}}', '{"transcript": "taxi", "state": {"taxi": {"area": "east"}}}']
    seqs = model._sequences(p, n, prompts, targets)
    length = max(len(e) for e, _ in seqs)
    emb, mask, labels = stack_sequences(seqs, left=False, multiple=64)
    assert emb.shape[1] == -(-length // 64) * 64 > length and not mask[:, length:].any()
    assert (labels[:, length:] == -100).all()
    with torch.no_grad():
        plain = model.loss(p, n, prompts, targets)
        model.pad_multiple = 64
        padded = model.loss(p, n, prompts, targets)
    assert padded == pytest.approx(plain.item(), rel=1e-5)
    model.pad_multiple = 1
    model.store_frozen_linears(torch.bfloat16)
    assert model.pad_multiple == BF16_PAD_MULTIPLE


def test_generate_is_batch_invariant(model):
    model.eval()
    fs = feats(90, 20, 51)
    prompts = [model.dst_prompt([("user", "hi"), ("agent", "how can i help?")]), model.dst_prompt([]),
               model.dst_prompt([("user", "a much longer history line " * 3)])]
    p, n = model.prefix("speech", fs)
    batch = model.generate(p, n, prompts, max_new_tokens=12)
    single = []
    for f, pr in zip(fs, prompts):
        p1, n1 = model.prefix("speech", [f])
        single += model.generate(p1, n1, [pr], max_new_tokens=12)
    assert batch == single
    assert any(batch)  # a random model still emits tokens


def test_trainable_state_roundtrip(tiny_dst_config, model):
    model.eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    sd = model.trainable_state_dict()
    assert sd and not any(k.startswith("llm.") and "lora_" not in k for k in sd)
    torch.manual_seed(123)
    fresh = SpeechDST.build(tiny_dst_config(), feature_dim=FEAT).eval()
    p, n = model.prefix("speech", feats(40))
    ref = model.loss(p, n, ["\nh\n"], ["t"])
    fresh.load_trainable_state_dict(sd)
    p, n = fresh.prefix("speech", feats(40))
    torch.testing.assert_close(fresh.loss(p, n, ["\nh\n"], ["t"]), ref)
    with pytest.raises(ValueError, match="does not fit"):
        fresh.load_trainable_state_dict({"connector.proj.weight": sd["connector.proj.weight"]})


def test_text_encoder_on_llm_embeddings(tiny_dst_config):
    m = SpeechDST.build(tiny_dst_config(mode="llm"), feature_dim=FEAT)
    emb, n = m.prefix("text_encoder", texts=["hello there"])
    assert emb.shape[:2] == (1, int(n[0]))
    assert not any("_llm_embeddings" in k for k in m.trainable_state_dict())
    assert any(k.startswith("text_encoder.embed_proj") for k in m.trainable_state_dict())


def test_save_and_load_pretrained(tmp_path, model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    again = SpeechDST.from_pretrained(tmp_path / "ckpt").eval()
    p, n = model.prefix("speech", feats(33))
    q, m = again.prefix("speech", feats(33))
    torch.testing.assert_close(again.loss(q, m, ["\nh\n"], ["t"]), model.loss(p, n, ["\nh\n"], ["t"]))
    assert again.cfg == model.cfg


def test_loss_equals_full_logits_cross_entropy(model):
    """The loss computes logits at target positions only; it must equal CE over all positions."""
    model.eval()
    p, n = model.prefix("speech", feats(40, 13))
    prompts, targets = [model.dst_prompt([("agent", "hi")]), model.dst_prompt([])], ['{"a": "b"}', "xy"]
    emb, mask, labels = stack_sequences(model._sequences(p, n, prompts, targets), left=False)
    logits = model.llm(inputs_embeds=emb, attention_mask=mask).logits[:, :-1]
    full = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)
    torch.testing.assert_close(model.loss(p, n, prompts, targets), full)


def test_no_runaway_stops_loops_and_leaves_other_output_alone():
    from spokentod.dst.model.speechdst import no_runaway

    def allowed(ids: list[int]) -> set[int]:
        scores = no_runaway(torch.tensor([ids]), torch.zeros(1, 10))
        return {i for i in range(10) if scores[0, i] > float("-inf")}

    assert allowed([5, 5, 5]) == set(range(10))  # a word 3 times is speech ("no, no, no")
    assert allowed([1, 5, 5, 5, 5]) == set(range(10)) - {5}  # the 5th copy is a loop
    assert allowed([2, 3, 2, 3, 2, 3]) == set(range(10)) - {2}  # a 2-token pattern said 3 times
    assert allowed([7, 8, 9, 7, 8, 9, 7, 8, 9]) == set(range(10)) - {7}
    assert allowed([2, 3, 2, 3, 4, 3]) == set(range(10))  # not periodic
    # rows are independent: only the looping one is constrained
    scores = no_runaway(torch.tensor([[1, 4, 4, 4, 4], [1, 2, 3, 4, 4]]), torch.zeros(2, 10))
    assert scores[0, 4] == float("-inf") and torch.isfinite(scores[1]).all()
