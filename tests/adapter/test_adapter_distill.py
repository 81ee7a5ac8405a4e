"""Distillation (adapter/distill.py): the student hearing speech vectors is compared with the LLM reading the
text at exactly the reply positions; replies are the LLM's own greedy ones, cached and resumable."""

from __future__ import annotations

import json

import pytest
import torch

from spokentod.adapter.distill import (
    distill_loss,
    generate_replies,
    prepare_replies,
    read_replies,
    reply_logits,
)
from spokentod.adapter.model import AdapterConfig, AdapterError, SpeechAdapter
from spokentod.adapter.train import AdapterRecipe, train

TEXTS = ["I need a cheap hotel.", "Book a taxi to the museum, please.", "Thank you, goodbye."]


@pytest.fixture(scope="module")
def model(tiny_llm):
    torch.manual_seed(0)
    cfg = AdapterConfig(llm=str(tiny_llm), connector={"width": 32, "layers": 1, "heads": 2, "ff": 64})
    return SpeechAdapter.build(cfg, 384).eval()


def test_reply_logits_are_the_rows_that_predict_each_reply_token(model):
    seqs = []
    for t, r in zip(TEXTS[:2], ([11, 12, 13], [14, 15])):
        head = model.user_turn(model.embed(model._ids(t)))
        emb = torch.cat([head, model.embed(r)])
        labels = torch.full((len(emb),), -100)
        labels[len(head):] = torch.tensor(r)
        seqs.append((emb, labels))
    got = reply_logits(model.llm, seqs)
    want = []  # reference: each sequence alone, full logits, the positions just before each reply token
    for emb, labels in seqs:
        full = model.llm(inputs_embeds=emb[None]).logits[0]
        want += [full[i - 1] for i in range(len(labels)) if labels[i] != -100]
    assert got.shape[0] == 5
    assert torch.allclose(got, torch.stack(want).float(), atol=1e-4)


def test_kl_is_zero_when_the_speech_vectors_are_the_text_and_positive_otherwise(model):
    replies = [[100, 200, 300], [400, 500]]
    as_text = [model.embed(model._ids(t.strip())) for t in TEXTS[:2]]
    assert distill_loss(model, as_text, TEXTS[:2], replies).item() == pytest.approx(0.0, abs=1e-5)
    speech = [torch.randn(7, as_text[0].shape[1], requires_grad=True), torch.randn(4, as_text[0].shape[1])]
    kd = distill_loss(model, speech, TEXTS[:2], replies)
    assert kd.item() > 0.01
    kd.backward()
    assert speech[0].grad.abs().sum() > 0 and all(p.grad is None for p in model.llm.parameters())


def test_replies_are_the_llms_greedy_continuation_of_the_text_turn(model):
    got = generate_replies(model, TEXTS, max_new_tokens=6)
    end = model.end_ids[-1]
    for text, ids in zip(TEXTS, got):
        prompt = torch.tensor([model.open_ids + model._ids(text) + model.close_ids])
        ref = model.llm.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=end, pad_token_id=end)
        ref = ref[0, prompt.shape[1]:].tolist()
        assert ids == (ref[: ref.index(end)] if end in ref else ref)


def test_prepare_resumes_and_a_bad_row_names_its_line(model, tmp_path):
    out = tmp_path / "replies.jsonl"
    first = prepare_replies(model, TEXTS * 2, out, limit=2, batch=2, max_new_tokens=4)
    assert first == {"path": str(out), "texts": 2, "generated": 2}
    again = prepare_replies(model, TEXTS, out, batch=2, max_new_tokens=4)
    assert again["texts"] == 3 and again["generated"] == 1  # only the new text
    rows = read_replies(out)
    assert set(rows) == {t.strip() for t in TEXTS}
    out.write_text(out.read_text() + '{"text": "x"}\n')
    with pytest.raises(ValueError, match=r"replies.jsonl:4"):
        read_replies(out)


@pytest.fixture(scope="module")
def corpus(render_adapter_corpus):
    return render_adapter_corpus(TEXTS)


def test_training_logs_the_distillation_loss_and_refuses_without_replies(corpus, model, tmp_path, tiny_llm):
    replies = tmp_path / "replies.jsonl"
    r = AdapterRecipe.model_validate({
        "corpus": str(corpus), "out": str(tmp_path / "out"), "features": str(tmp_path / "feats"),
        "model": {"llm": str(tiny_llm), "connector": {"width": 32, "layers": 1, "heads": 2, "ff": 64}},
        "train": {"steps": 4, "budget_minutes": None, "batch_size": 3, "warmup": 1, "eval_every": 100,
                  "dev_limit": 3, "log_every": 1, "max_new_tokens": 4, "bucket": 1, "ctc_only_steps": 2,
                  "distill_weight": 1.0, "distill_replies": str(replies), "distill_items": 2}})
    with pytest.raises(AdapterError, match="adapter replies"):
        train(r)
    prepare_replies(model, TEXTS, replies, max_new_tokens=4)
    train(r)
    log = [json.loads(x) for x in (tmp_path / "out/log.jsonl").read_text().splitlines()]
    assert ["kd" in row for row in log] == [False, False, True, True]  # only once the LLM phase starts
    assert all(row["kd"] >= 0 and row["kd_items"] == 2 for row in log[2:])


def test_distillation_items_come_from_the_replied_texts_however_few(corpus, model, tmp_path, tiny_llm):
    """One replied text among many: every LLM-phase batch still holds `distill_items` of it (the reply pool
    has its own stream; drawn with the corpus it would be in a batch rarely), and last/ holds the latest
    evaluated weights beside best/."""
    replies = tmp_path / "replies.jsonl"
    prepare_replies(model, TEXTS[:1], replies, max_new_tokens=4)
    r = AdapterRecipe.model_validate({
        "corpus": str(corpus), "out": str(tmp_path / "out"), "features": str(tmp_path / "feats"),
        "model": {"llm": str(tiny_llm), "connector": {"width": 32, "layers": 1, "heads": 2, "ff": 64}},
        "train": {"steps": 4, "budget_minutes": None, "batch_size": 2, "warmup": 1, "eval_every": 2,
                  "dev_limit": 3, "log_every": 1, "max_new_tokens": 4, "bucket": 1,
                  "distill_weight": 1.0, "distill_replies": str(replies), "distill_items": 1}})
    train(r)
    log = [json.loads(x) for x in (tmp_path / "out/log.jsonl").read_text().splitlines()]
    assert [row.get("kd_items") for row in log] == [1, 1, 1, 1]
    assert json.loads((tmp_path / "out/last/adapter.json").read_text())["step"] == 4
    assert json.loads((tmp_path / "out/best/adapter.json").read_text())["step"] in (2, 4)


def test_training_can_start_from_a_trained_adapter(corpus, model, tmp_path, tiny_llm):
    base = {"corpus": str(corpus), "features": str(tmp_path / "feats"),
            "model": {"llm": str(tiny_llm), "connector": {"width": 32, "layers": 1, "heads": 2, "ff": 64}},
            "train": {"steps": 1, "budget_minutes": None, "batch_size": 3, "lr": 0.0, "min_lr": 0.0, "warmup": 1,
                      "eval_every": 100, "bucket": 1, "ctc_only_steps": 1}}
    model.save(tmp_path / "start", dtype=torch.float16)  # as exported
    train(AdapterRecipe.model_validate({**base, "out": str(tmp_path / "a"), "init": str(tmp_path / "start")}))
    got = torch.load(tmp_path / "a/checkpoint.pt", weights_only=False)["adapter"]
    want = SpeechAdapter.load_weights(tmp_path / "start")
    assert all(torch.equal(got[k], want[k]) for k in want)  # lr 0: the loaded weights, unchanged
    other = {**base["model"], "asr_prompt": 4}  # a model the weights do not fit
    with pytest.raises(AdapterError, match="does not fit"):
        train(AdapterRecipe.model_validate({**base, "model": other, "out": str(tmp_path / "b"),
                                            "init": str(tmp_path / "start")}))
