"""Phase 2 from a trained speech adapter (recipe `speech_adapter`): the DST model takes the adapter's connector
and CTC head, reads speech as the adapter's CTC segments (parity with SpeechAdapter.speech_inputs), keeps the
head in its checkpoints, and refuses an adapter that does not fit, naming the fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_dst_train import _recipe
from torch import Tensor

from spokentod.adapter import EMBEDDED
from spokentod.adapter.model import AdapterConfig, SpeechAdapter
from spokentod.dst.model.speechdst import SpeechDST
from spokentod.dst.train.loop import train_phase
from spokentod.dst.train.recipe import RecipeError, load_recipe, parse_recipe
from spokentod.errors import SpokenTODError

CONNECTOR = {"width": 32, "layers": 1, "heads": 2, "ff": 64}
REPO = Path(__file__).resolve().parents[2]
ENCODER = {"kind": "whisper-ct2", "model": "tiny.en", "window": "fit"}


def _random_adapter(tiny_llm, out: Path, compress: str, log_scale: float | None = None) -> SpeechAdapter:
    """A random adapter on the tiny LLM, saved to ``out`` (float16) and loaded back, whose CTC blank is pushed
    away, so that segments are real runs; ``log_scale`` sets its CTC head's scale."""
    model = SpeechAdapter.build(AdapterConfig(llm=str(tiny_llm), encoder=ENCODER, connector=CONNECTOR,
                                              compress=compress), 384).eval()
    with torch.no_grad():
        model.ctc_blank.normal_()
        if log_scale is not None:
            model.ctc_log_scale.fill_(log_scale)
    model.save(out, dtype=torch.float16)
    return SpeechAdapter.load(out)


@pytest.fixture(scope="module")
def adapter(tiny_llm, tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("adapter")
    return _random_adapter(tiny_llm, out, "ctc"), out


def _parity(cfg, ad: SpeechAdapter, where: Path) -> list[Tensor]:
    """A DST model built from ``cfg`` and loaded from the adapter at ``where`` reads two random utterances
    exactly as the adapter does; returns what the adapter's LLM reads."""
    dst = SpeechDST.build(cfg.model, 384)
    dst.load_speech_adapter(where)
    dst.eval()
    feats = [torch.randn(n, 384) for n in (70, 130)]
    with torch.no_grad():
        want = ad.speech_inputs(feats)
        got, lengths = dst.prefix("speech", feats)
    assert lengths.tolist() == [len(w) for w in want]
    for g, w, n in zip(got, want, lengths.tolist()):
        assert torch.allclose(g[:n], w, atol=1e-5)
    return want


def _dst_recipe(tmp_path, tiny_llm, adapter_dir, **model):
    raw = _recipe(tmp_path, tiny_llm, steps=2, eval_every=2)
    raw.pop("phase1")
    raw["model"] |= {"connector": CONNECTOR, "encoder": ENCODER, "compress": "ctc"} | model
    raw["speech_adapter"] = str(adapter_dir)
    return raw


def test_dst_reads_speech_as_the_adapters_segments_and_keeps_its_head(tmp_path, tiny_llm, adapter):
    ad, where = adapter
    raw = _dst_recipe(tmp_path, tiny_llm, where)
    cfg = parse_recipe(raw, "test")
    want = _parity(cfg, ad, where)
    assert min(map(len, want)) < 130 // 6  # compressed
    # phase 2 trains LoRA & co., not the CTC head, and its checkpoints carry the head for tracking
    train_phase(cfg, 2, progress=False)
    best = SpeechDST.load_deltas(tmp_path / "run/phase2/best")
    assert torch.equal(best["ctc_blank"], ad.ctc_blank.detach().float())
    assert json.loads((tmp_path / "run/phase2/best/model.json").read_text())["config"]["compress"] == "ctc"
    log = [json.loads(x) for x in (tmp_path / "run/phase2/log.jsonl").read_text().splitlines()]
    assert all(0 < row["segments_per_frame"] <= 1 for row in log)  # the segmentation is watched every step


def test_dst_reads_soft_tokens_as_the_adapter_does(tmp_path, tiny_llm):
    torch.manual_seed(1)
    # a scale other than the initial one: the DST model must take the adapter's
    ad = _random_adapter(tiny_llm, tmp_path / "soft", "soft", log_scale=1.5)
    cfg = parse_recipe(_dst_recipe(tmp_path, tiny_llm, tmp_path / "soft", compress="soft"), "test")
    want = _parity(cfg, ad, tmp_path / "soft")
    emb = ad.llm.get_input_embeddings().weight
    assert not torch.allclose(want[0][0], emb[(emb @ want[0][0]).argmax()], atol=1e-3)  # a mix, not one token


def test_an_adapter_that_does_not_fit_is_refused_with_the_fields(tmp_path, tiny_llm, adapter):
    _, where = adapter
    cfg = parse_recipe(_dst_recipe(tmp_path, tiny_llm, where, connector={**CONNECTOR, "width": 48}), "test")
    dst = SpeechDST.build(cfg.model, 384)
    with pytest.raises(SpokenTODError, match=r"model\.connector\.width: adapter 32, recipe 48"):
        dst.load_speech_adapter(where)


def test_recipe_rules_for_speech_adapter(tmp_path, tiny_llm, adapter):
    raw = _dst_recipe(tmp_path, tiny_llm, adapter[1])
    with pytest.raises(RecipeError, match="speech_adapter"):
        parse_recipe(raw | {"phase1": _recipe(tmp_path, tiny_llm)["phase1"]}, "test")
    no_head = {k: v for k, v in raw.items() if k != "speech_adapter"}
    with pytest.raises(RecipeError, match="compress: ctc needs a trained CTC head"):
        parse_recipe(no_head, "test")
    with pytest.raises(RecipeError, match="phase1 does not train"):
        parse_recipe(no_head | {"phase1": _recipe(tmp_path, tiny_llm)["phase1"], "init_from": "x"}, "test")
    # a checkpoint without a CTC head cannot start a ctc recipe: refused before any training, naming it
    plain = tmp_path / "plain"
    model = parse_recipe(raw, "test").model.model_copy(update={"compress": "none"})
    SpeechDST.build(model, 384).save_pretrained(plain)
    with pytest.raises(SpokenTODError, match=f"init_from {plain} has no trained CTC head"):
        train_phase(parse_recipe(no_head | {"init_from": str(plain)}, "test"), 2, progress=False)


@pytest.mark.slow
def test_the_shipped_adapter_fits_the_cpu_recipe():
    """configs/dst/cpu_small.yaml starts phase 2 from the shipped adapter (the real SmolLM2 and adapter)."""
    cfg = load_recipe(REPO / "configs/dst/cpu_small.yaml")
    assert cfg.speech_adapter == "embedded" and cfg.phase1 is None
    dst = SpeechDST.build(cfg.model, 384)
    dst.load_speech_adapter(cfg.speech_adapter)
    shipped = SpeechAdapter.load_weights(EMBEDDED)
    assert torch.equal(dst.connector.proj.weight.detach(), shipped["connector.proj.weight"])
    assert torch.equal(dst.ctc_blank.detach(), shipped["ctc_blank"])
