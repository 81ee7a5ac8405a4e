"""Token log-probabilities end to end over loopback, no mocks: `spokentod serve` (in a thread) on tiny Llama
models through the `hf` backend → the `openai` chat backend → the LLM judge's probability-weighted score.

Two tiny models, both built here offline on the SmolLM2 tokenizer:
- `random_llama`: random weights, as in test_hf_backends.py. It writes junk, so it checks the server's
  logprobs shape and the judge's "missing with a reason" path on real returned log-probabilities.
- `scripted_llama`: a real LlamaForCausalLM whose weights are set by hand so it writes one judge reply with
  a known distribution at each score (see the fixture). The SmolLM2 tokenizer spells numbers digit by digit,
  which the judge rightly refuses to weight, so the tokenizer gets a few number tokens (" 50".." 90") as
  tokenizers with number tokens have (Llama 3, GPT-4). It checks the whole weighted-score path.
"""

from __future__ import annotations

import json
import math

import httpx
import pytest
import torch  # installed by `make install`; a missing install must fail, not skip
from _serving import EchoLLM, ServerThread

from spokentod.backends.base import GenParams, create
from spokentod.metrics.judge import Judge, combine
from spokentod.metrics.judge_logprobs import score_expectation, weighted_scores
from spokentod.metrics.judge_parse import QUALITY, parse_quality
from spokentod.serve.app import create_app

MSGS = [{"role": "user", "content": "Book a table for two"}]
FIELDS = {"history": "User: I need a table for two tonight.", "reply": "Sure, which time suits you?",
          "topic": "restaurant booking"}
OPEN = '{"naturalness": {"reason": "ok", "score":'
MID = '}, "consistency": {"reason": "fine", "score":'
NUMBERS = [" 50", " 60", " 70", " 80", " 90"]
# (token, next-token probabilities): the scripted model's whole behaviour
CHAIN = [("Ċ", {OPEN: 1.0}),  # "Ċ" (newline) ends the chat template's generation prompt
         (OPEN, {" 80": 0.6, " 90": 0.3, " 70": 0.1}),
         (" 80", {MID: 1.0}),
         (MID, {" 60": 0.5, " 70": 0.4, " 50": 0.1}),
         (" 60", {"}}": 1.0}),
         ("}}", {"<|im_end|>": 1.0})]


def _tiny_config(tok, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **kw)


@pytest.fixture(scope="module")
def random_llama(tmp_path_factory, smol_tokenizer_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = tmp_path_factory.mktemp("random-llama")
    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    torch.manual_seed(0)
    LlamaForCausalLM(_tiny_config(tok)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def scripted_llama(tmp_path_factory, smol_tokenizer_dir):
    """A bigram model in Llama weights: the attention and MLP outputs are zeroed, so the last hidden state is
    the RMS-normalized embedding of the current token and the next token depends on it alone. Each token of
    CHAIN gets a one-hot embedding (row j: unit vector j, which the norm scales to sqrt(d)), and column j of
    lm_head holds (30 + ln p) / sqrt(d) for its successors: logits 30 + ln p there, 0 for the other ~49k
    tokens (e^-30 each), so greedy decoding writes OPEN 80 MID 60 }} and stops, and the softmax at the two
    score positions is the given p to within 1e-8."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = tmp_path_factory.mktemp("scripted-llama")
    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    tok.add_tokens([AddedToken(t, normalized=False) for t in [OPEN, MID, *NUMBERS]])
    cfg = _tiny_config(tok, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    d = cfg.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for j, (src, nxt) in enumerate(CHAIN):
            model.model.embed_tokens.weight[tok.convert_tokens_to_ids(src)] = torch.eye(d)[j]
            for t, p in nxt.items():
                model.lm_head.weight[tok.convert_tokens_to_ids(t), j] = (30 + math.log(p)) / math.sqrt(d)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _serve(model_dir, model_id: str, **config):
    llm = create("llm", {"name": "hf", "model": str(model_dir), "threads": 1})
    return ServerThread(create_app({"llm": {"id": model_id}, **config}, backends={"llm": llm}))


@pytest.fixture(scope="module")
def random_server(random_llama, tmp_path_factory):
    cache = {"path": str(tmp_path_factory.mktemp("serve-cache") / "c.sqlite")}  # logprobs requests skip it
    with _serve(random_llama, "tiny-random", cache=cache) as s:
        yield s


@pytest.fixture(scope="module")
def scripted_server(scripted_llama):
    with _serve(scripted_llama, "tiny-scripted") as s:
        yield s


def _client(server, model: str):
    return create("llm", {"name": "openai", "model": model, "base_url": server.url, "max_attempts": 1,
                          "timeout": 60})


def _check_entries(content: list[dict], k: int) -> None:
    """OpenAI's shape, top_logprobs sorted, the chosen token among them and as likely as the best (greedy)."""
    for e in content:
        assert set(e) == {"token", "logprob", "bytes", "top_logprobs"}, e
        assert e["logprob"] <= 0.0 and bytes(e["bytes"]).decode("utf-8") == e["token"]
        top = e["top_logprobs"]
        assert len(top) == k
        lps = [a["logprob"] for a in top]
        assert lps == sorted(lps, reverse=True) and all(lp <= 0.0 for lp in lps)
        assert e["logprob"] == pytest.approx(lps[0], abs=1e-5)
        assert e["token"] in [a["token"] for a in top]


# ---------------------------------------------------------------- the server


def test_server_returns_openai_logprobs_for_the_generated_tokens(random_server):
    with httpx.Client(base_url=random_server.url, timeout=60) as http:
        body = {"model": "tiny-random", "messages": MSGS, "max_tokens": 8}
        plain = http.post("/chat/completions", json=body).json()
        assert plain["choices"][0]["logprobs"] is None  # not asked for
        for _ in range(2):  # twice: the second would be a (text-only) cache hit if logprobs used the cache
            r = http.post("/chat/completions", json={**body, "logprobs": True, "top_logprobs": 3})
            assert r.status_code == 200, r.text
            data = r.json()
            choice = data["choices"][0]
            text = choice["message"]["content"]
            assert text == plain["choices"][0]["message"]["content"]  # asking for logprobs changes nothing else
            content = choice["logprobs"]["content"]
            assert 0 < len(content) <= data["usage"]["completion_tokens"]
            assert "".join(e["token"] for e in content) == text
            _check_entries(content, 3)
        r = http.post("/chat/completions", json={**body, "logprobs": True})  # no top_logprobs: [] per token
        assert all(e["top_logprobs"] == [] for e in r.json()["choices"][0]["logprobs"]["content"])


def test_logprobs_request_errors_follow_openai(random_server):
    with httpx.Client(base_url=random_server.url, timeout=60) as http:
        body = {"model": "tiny-random", "messages": MSGS, "max_tokens": 4}
        for extra, param in (({"top_logprobs": 2}, "top_logprobs"),  # needs logprobs: true
                             ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),  # 0-20
                             ({"logprobs": True, "stream": True}, "logprobs")):
            r = http.post("/chat/completions", json={**body, **extra})
            assert r.status_code == 400, (extra, r.text)
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and err["param"] == param, err


def test_a_backend_without_logprobs_answers_null_not_an_error():
    with ServerThread(create_app({}, backends={"llm": EchoLLM()})) as s:
        r = httpx.post(f"{s.url}/chat/completions", timeout=30,
                       json={"model": "echo", "messages": MSGS, "logprobs": True, "top_logprobs": 5})
        assert r.status_code == 200 and r.json()["choices"][0]["logprobs"] is None
        c = _client(s, "echo").chat(MSGS, GenParams(logprobs=True, top_logprobs=5))
        assert c.text == "echo: Book a table for two" and c.logprobs is None


def test_hf_backend_logprobs_with_sampling_and_stop_strings(random_llama):
    llm = create("llm", {"name": "hf", "model": str(random_llama), "threads": 1})
    assert set(GenParams().as_dict()) == {"max_tokens", "temperature", "top_p", "seed", "stop"}  # keys as before
    sampled = llm.chat(MSGS, GenParams(max_tokens=10, temperature=1.0, seed=3, logprobs=True, top_logprobs=2))
    assert "".join(e["token"] for e in sampled.logprobs) == sampled.text
    assert all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 2 for e in sampled.logprobs)
    assert llm.chat(MSGS, GenParams(max_tokens=4)).logprobs is None  # not asked for
    full = llm.chat(MSGS, GenParams(max_tokens=12, logprobs=True, top_logprobs=1))
    words = [e["token"] for e in full.logprobs]
    stop = next((t for t in words[3:] if t.strip() and t not in "".join(words[:3])), None)
    if stop is None:
        pytest.skip("the random model wrote no usable stop string")
    cut = llm.chat(MSGS, GenParams(max_tokens=12, stop=[stop], logprobs=True, top_logprobs=1))
    assert cut.text == full.text[: full.text.index(stop)]
    joined = "".join(e["token"] for e in cut.logprobs)
    assert joined.startswith(cut.text) and len(cut.logprobs) < len(full.logprobs)  # nothing after the stop


# ---------------------------------------------------------------- the judge through the openai backend


def _number(token: str) -> bool:
    t = token.strip()
    return t.isascii() and t.isdigit() and int(t) <= 100


def _recompute(entry: dict) -> float:
    """The G-Eval expectation, by hand, from one entry's returned top_logprobs."""
    probs = {a["token"].strip(): math.exp(a["logprob"]) for a in entry["top_logprobs"] if _number(a["token"])}
    return sum(int(t) * p for t, p in probs.items()) / sum(probs.values())


def test_judge_weights_scores_with_the_servers_logprobs(scripted_server):
    llm = _client(scripted_server, "tiny-scripted")
    c = llm.chat(MSGS, GenParams(max_tokens=20, logprobs=True, top_logprobs=5))  # the backend, as asked
    assert c.text == f"{OPEN} 80{MID} 60}}}}" and json.loads(c.text)  # what the weights say it writes
    _check_entries(c.logprobs, 5)

    # No schema: the bigram model writes its JSON in multi-character added tokens, and a grammar lets fixed
    # text through only in the tokenizer's own spelling (llguidance's forced tokens), which this model never
    # learnt. Constrained judging is checked in tests/backends/test_llm_constrained.py.
    judge = Judge(llm, max_tokens=20, constrain=False)
    assert judge.logprobs is True  # "auto": an OpenAI-compatible backend is asked
    messages = [{"role": "user", "content": judge.prompts["quality"].render(**FIELDS)}]
    text, content = judge._call(messages, 0)  # what the judge's request got back
    assert text == c.text
    _check_entries(content, 20)
    by_token = {e["token"]: e for e in content}
    expected = {"naturalness": _recompute(by_token[" 80"]), "consistency": _recompute(by_token[" 60"])}
    assert expected == pytest.approx({"naturalness": 0.6 * 80 + 0.3 * 90 + 0.1 * 70,
                                      "consistency": 0.5 * 60 + 0.4 * 70 + 0.1 * 50}, abs=1e-4)
    assert weighted_scores(text, content) == (pytest.approx(expected), [])

    out = combine(judge.ask("quality", parse_quality, **FIELDS), QUALITY, judge.weak_reason, weight_key=lambda o: o)
    assert out.values == pytest.approx(expected) and not out.missing
    assert all(0 <= v <= 100 for v in out.values.values())
    assert out.judge["score_source"] == "logprob-weighted"
    assert out.judge["sampled"] == {"naturalness": 80.0, "consistency": 60.0}  # the argmax scores, kept
    assert out.judge["weighted"] == pytest.approx(expected)


def test_judge_on_junk_records_missing_with_reason_and_keeps_the_logprobs_usable(random_server):
    # No schema, so the random model writes junk (with one, it writes JSON: tests/backends/test_llm_constrained.py)
    judge = Judge(_client(random_server, "tiny-random"), max_tokens=24, constrain=False)
    assert judge.logprobs is True
    messages = [{"role": "user", "content": judge.prompts["quality"].render(**FIELDS)}]
    text, content = judge._call(messages, 0)
    _check_entries(content, 20)
    assert "".join(e["token"] for e in content) == text
    # The weighted-score helpers on these real log-probabilities: a value only where numbers hold the mass.
    for e in content:
        value, mass = score_expectation(e)
        numbers = [a for a in e["top_logprobs"] if _number(a["token"])]
        assert mass == pytest.approx(sum(math.exp(a["logprob"]) for a in numbers))
        assert (value is None) == (not numbers)
        if value is not None:
            assert value == pytest.approx(_recompute(e)) and 0 <= value <= 100
    weighted, _ = weighted_scores(text, content)
    assert all(0 <= v <= 100 for v in weighted.values())

    out = combine(judge.ask("quality", parse_quality, **FIELDS), QUALITY, judge.weak_reason, weight_key=lambda o: o)
    try:
        parsed = parse_quality(text)
    except ValueError as e:  # the expected case for random weights: missing with the parser's reason, never 0
        assert out.values == {"naturalness": None, "consistency": None}
        why = f"judge reply unparsed: {e}"
        assert out.missing == {"naturalness": why, "consistency": why} and out.judge["unparsed"] == [str(e)]
        assert out.judge["score_source"] == "sampled"
    else:  # junk that happens to parse: values in range or missing with a reason
        for o in QUALITY:
            assert (out.values[o] is not None and 0 <= out.values[o] <= 100) or parsed.missing.get(o)
