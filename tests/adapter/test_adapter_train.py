"""The adapter recipe end to end on a tiny random LLM: features cached, CE + CTC steps that learn (an
overfit check on four real espeak-ng utterances), time-budget stop, resume, best-checkpoint export."""

from __future__ import annotations

import json

import pytest
import torch

from spokentod.adapter import corpus as C
from spokentod.adapter.model import SpeechAdapter
from spokentod.adapter.train import AdapterRecipe, Features, lr_at, train

STEPS = 40
TEXTS = ["I need a cheap hotel.", "Book a taxi to the museum.", "Thank you, goodbye.", "Is there free parking?"]


@pytest.fixture(scope="module")
def tiny_corpus(render_adapter_corpus):
    return render_adapter_corpus(TEXTS)


def recipe(tmp_path, corpus, llm, **train) -> AdapterRecipe:
    return AdapterRecipe.model_validate({
        "corpus": str(corpus), "out": str(tmp_path / "out"), "features": str(tmp_path / "feats"),
        "model": {"llm": str(llm), "connector": {"width": 64, "layers": 1, "heads": 2, "ff": 128, "dropout": 0.0}},
        "train": {"steps": 150, "budget_minutes": None, "batch_size": 4, "lr": 1e-2, "warmup": 5, "min_lr": 3e-3,
                  "eval_every": 150, "dev_limit": 4, "save_every": 20, "log_every": 10, "max_new_tokens": 12,
                  "bucket": 1, **train}})


@pytest.mark.slow
def test_overfits_four_utterances_and_exports_the_best(tmp_path, tiny_corpus):
    # The real embedded LLM: a tiny random one cannot be steered to exact text by its inputs alone.
    r = recipe(tmp_path, tiny_corpus, "smollm2", steps=STEPS, eval_every=STEPS, lr=3e-3, min_lr=1e-3)
    state = train(r)
    evals = [json.loads(x) for x in (tmp_path / "out/eval.jsonl").read_text().splitlines()]
    log = [json.loads(x) for x in (tmp_path / "out/log.jsonl").read_text().splitlines()]
    assert state["step"] == STEPS and [e["step"] for e in evals] == [STEPS]
    assert log[-1]["ce"] < 0.5 * log[0]["ce"] and log[-1]["ctc"] < log[0]["ctc"]
    assert evals[-1]["wer"] <= 0.25, evals[-1]["examples"]  # it learned to "hear" the four utterances
    best = SpeechAdapter.load(tmp_path / "out/best")
    assert best.meta["dev_wer"] == evals[-1]["wer"] and best.meta["step"] == STEPS
    hyps = best.transcribe(Features(r).get(C.read_manifest(tiny_corpus, "dev")), 12)
    assert sum(h.rstrip(".?,!") == t.rstrip(".?,!") for h, t in zip(hyps, TEXTS)) >= 2


def test_budget_stops_and_resume_continues(tmp_path, tiny_corpus, tiny_llm):
    r = recipe(tmp_path, tiny_corpus, tiny_llm, steps=6, save_every=2, eval_every=100, budget_minutes=1e-6)
    assert train(r)["step"] == 1  # the time budget ends training after the first step
    r.train.budget_minutes = None
    state = train(r)  # resumes from checkpoint.pt at step 1 and runs to `steps`
    assert state["step"] == 6
    steps = [json.loads(x)["step"] for x in (tmp_path / "out/log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_ce_hearing_lr_scale_0_freezes_the_connector_and_trains_the_prompt(tmp_path, tiny_corpus, tiny_llm):
    r = recipe(tmp_path, tiny_corpus, tiny_llm, steps=3, ctc_only_steps=3, ce_hearing_lr_scale=0.0, save_every=1,
               eval_every=100)
    r.model.asr_prompt = 4
    train(r)  # the CTC phase only

    def saved() -> dict:
        return torch.load(tmp_path / "out/checkpoint.pt", weights_only=False)["adapter"]

    after_ctc = saved()
    r.train.steps = 6
    train(r)  # resumes into the CE phase
    after_ce = saved()
    hearing = [k for k in after_ctc if k != "asr_prompt"]
    assert hearing and all(torch.equal(after_ctc[k], after_ce[k]) for k in hearing)
    assert not torch.equal(after_ctc["asr_prompt"], after_ce["asr_prompt"])  # only CE reaches the prompt


def test_only_the_adapter_trains(tiny_llm):
    from spokentod.adapter.model import AdapterConfig

    m = SpeechAdapter.build(AdapterConfig(llm=str(tiny_llm), connector={"width": 32, "layers": 1, "heads": 2,
                                                                        "ff": 64}), 384)
    losses = m.asr_losses([torch.randn(120, 384), torch.randn(60, 384)], TEXTS[:2])
    (losses["ce"] + losses["ctc"]).backward()
    assert all(p.grad is None for p in m.llm.parameters())
    assert m.connector.proj.weight.grad.abs().sum() > 0 and m.ctc_blank.grad is not None
    assert set(m.adapter_state()) and not any(k.startswith("llm.") for k in m.adapter_state())
    assert "ce" not in m.asr_losses([torch.randn(120, 384)], TEXTS[:1], ce=False)


def test_a_dev_reading_mid_training_has_no_dropout(tiny_llm):
    from spokentod.adapter.model import AdapterConfig

    torch.manual_seed(0)
    m = SpeechAdapter.build(AdapterConfig(llm=str(tiny_llm), connector={"width": 32, "layers": 1, "heads": 2,
                                                                        "ff": 64, "dropout": 0.5}), 384)
    x = [torch.randn(300, 384), torch.randn(200, 384)]
    m.train()
    reads = [m.ctc_transcribe(x) for _ in range(3)]
    assert m.training and reads[0] == reads[1] == reads[2] == m.eval().ctc_transcribe(x)


def test_lr_schedule_warms_up_and_decays():
    s = AdapterRecipe().train
    assert lr_at(0, s) < lr_at(s.warmup - 1, s) <= s.lr
    assert lr_at(s.steps, s) == pytest.approx(s.min_lr)


def test_lr_schedule_restarts_at_the_ce_phase():
    s = AdapterRecipe().train.model_copy(update={"steps": 1000, "ctc_only_steps": 600, "warmup": 10})
    assert lr_at(599, s) == pytest.approx(s.min_lr, rel=1e-2)  # phase 1 decayed fully
    assert lr_at(600, s) == pytest.approx(s.lr / s.warmup)  # phase 2 warms up again
    assert lr_at(609, s) == pytest.approx(s.lr) and lr_at(1000, s) == pytest.approx(s.min_lr)
    one = s.model_copy(update={"restart": False})
    assert lr_at(600, one) < s.lr / 2  # a single schedule: the CE phase starts from a decayed rate


def _runs(labels: list[int], blank: int) -> list[tuple[int, int]]:
    """(start, end) of each run of one non-blank label: the reference segmentation, written plainly."""
    out, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            if labels[start] != blank:
                out.append((start, i))
            start = i
    return out


def _token_frames(m: SpeechAdapter, seq: list[int | None]) -> tuple[torch.Tensor, list[int], list]:
    """Frames [1, T, H] built from a known token sequence (None: blank) with a little noise: the CTC blank is
    set to a mean embedding and each frame is 40 × its token's vector. Returns the frames, the head's label
    per frame and the runs of one non-blank label."""
    emb = m.llm.get_input_embeddings().weight.detach()
    with torch.no_grad():
        m.ctc_blank.copy_(emb[:8].mean(0))
    vec = [m.ctc_blank.detach() if t is None else emb[t] for t in seq]
    frames = torch.stack([40 * v + 0.01 * torch.randn(emb.shape[1]) for v in vec])[None]
    labels = m.ctc_classes(frames)[0].tolist()
    return frames, labels, _runs(labels, len(emb))


def test_ctc_segments_average_runs_of_one_token_and_drop_blanks(tiny_llm):
    from spokentod.adapter.model import AdapterConfig

    m = SpeechAdapter.build(AdapterConfig(llm=str(tiny_llm), connector={"width": 32, "layers": 1, "heads": 2,
                                                                        "ff": 64}), 384)
    emb = m.llm.get_input_embeddings().weight.detach()
    blank = len(emb)
    seq = [5, 5, None, 7, 7, 7, None, None, 5, 9]
    frames, _, runs = _token_frames(m, seq)
    assert len(runs) >= 3  # the frames do read as several tokens
    segs = m.segments(frames, torch.tensor([len(seq)]))[0]
    assert segs.shape == (len(runs), emb.shape[1])
    for seg, (a, b) in zip(segs, runs):
        assert torch.allclose(seg, frames[0, a:b].mean(0), atol=1e-5)
    # An utterance read as all blank keeps its frames rather than vanishing.
    r = torch.randn(emb.shape[1])
    with torch.no_grad():
        m.ctc_blank.copy_(1000 * r)  # r·(1000 r) dwarfs every r·E[t]
    silent = torch.stack([r] * 4)[None]
    assert set(m.ctc_classes(silent)[0].tolist()) == {blank}
    assert torch.equal(m.segments(silent, torch.tensor([4]))[0], silent[0])


def test_soft_segments_are_the_heads_tokens_and_carry_the_gradient(tiny_llm):
    from spokentod.adapter.model import AdapterConfig

    m = SpeechAdapter.build(AdapterConfig(llm=str(tiny_llm), compress="soft", connector={
        "width": 32, "layers": 1, "heads": 2, "ff": 64}), 384)
    emb = m.llm.get_input_embeddings().weight.detach()
    seq = [5, 5, None, 7, 7, 7, None, 9]
    frames, labels, runs = _token_frames(m, seq)
    with torch.no_grad():
        m.ctc_log_scale.fill_(8.0)  # a sharp head: each soft token is its best token's embedding
        sharp = m.segments(frames, torch.tensor([len(seq)]))[0]
        m.ctc_log_scale.fill_(-20.0)  # a flat head: an even mix of the top tokens, no longer any one of them
        flat = m.segments(frames, torch.tensor([len(seq)]))[0]
    assert len(sharp) == len(runs) >= 3
    for seg, (a, _) in zip(sharp, runs):
        assert torch.allclose(seg, emb[labels[a]], atol=1e-4)
    assert not torch.allclose(flat[0], emb[labels[runs[0][0]]], atol=1e-3)
    with torch.no_grad():
        m.ctc_log_scale.fill_(2.0)
    losses = m.asr_losses([torch.randn(120, 384), torch.randn(60, 384)], TEXTS[:2])
    losses["ce"].backward()  # CE alone: its gradient reaches the connector only through the soft weights
    assert m.connector.proj.weight.grad.abs().sum() > 0 and m.ctc_log_scale.grad.abs() > 0


def test_learned_asr_prompt_trains_and_round_trips(tmp_path, tiny_llm):
    from spokentod.adapter.model import AdapterConfig

    cfg = AdapterConfig(llm=str(tiny_llm), asr_prompt=5, compress="none",
                        connector={"width": 32, "layers": 1, "heads": 2, "ff": 64})
    m = SpeechAdapter.build(cfg, 384)
    assert m.asr_instruction().shape[0] == 5
    m.asr_losses([torch.randn(120, 384)], TEXTS[:1])["ce"].backward()
    assert m.asr_prompt.grad is not None and m.asr_prompt.grad.abs().sum() > 0
    with torch.no_grad():
        m.asr_prompt.add_(1.0)
    m.save(tmp_path / "a")
    again = SpeechAdapter.load(tmp_path / "a")
    assert torch.equal(again.asr_prompt, m.asr_prompt.detach())
