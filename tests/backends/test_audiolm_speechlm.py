"""The embedded end-to-end speech LM (speech adapter → frozen LLM): the speech vectors land exactly where
the audio part was in the LLM's own chat format, and it answers through the normal audiolm interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spokentod.adapter.model import AdapterConfig, SpeechAdapter
from spokentod.backends.audiolm.speechlm import MARKER, SpeechLM, to_marked
from spokentod.backends.base import GenParams, create
from spokentod.errors import AudioError


@pytest.fixture(scope="module")
def speech_wav():
    wav = create("tts", {"name": "espeak"}).synthesize("I need a cheap hotel in the centre.")
    return wav.samples, wav.rate


@pytest.fixture(scope="module")
def tiny_speechlm(tmp_path_factory, tiny_llm):
    out = tmp_path_factory.mktemp("adapter")
    cfg = AdapterConfig(llm=str(tiny_llm), connector={"width": 32, "layers": 1, "heads": 2, "ff": 64})
    torch.manual_seed(0)
    SpeechAdapter.build(cfg, 384).save(out)
    return SpeechLM(adapter=out)


def _msgs(samples, rate):
    return [{"role": "system", "content": "You are a travel agent."},
            {"role": "user", "content": "Hello there."},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": [{"type": "audio", "samples": samples, "rate": rate}]}]


def test_speech_vectors_replace_the_audio_part_inside_the_chat_template(tiny_speechlm, speech_wav):
    lm, m = tiny_speechlm, tiny_speechlm.model
    msgs = _msgs(*speech_wav)
    conv, audios = to_marked(msgs)
    assert conv[-1] == {"role": "user", "content": MARKER} and len(audios) == 1
    text = m.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    before, after = text.split(MARKER)
    with torch.no_grad():  # as respond() computes them (the connector's fast path rounds a little differently)
        speech = m.speech_inputs(lm.encoder.encode(audios))[0]
    emb = lm.prompt_embeddings(msgs)
    nb = len(m._ids(before))
    assert emb.shape[0] == nb + len(speech) + len(m._ids(after))
    assert torch.equal(emb[:nb], m.embed(m._ids(before)))
    assert torch.allclose(emb[nb: nb + len(speech)], speech)
    # With text where the audio was, the embeddings are the text path's, token for token.
    as_text = msgs[:-1] + [{"role": "user", "content": "a cheap hotel"}]
    ids = m.tokenizer.apply_chat_template([dict(x) for x in as_text], tokenize=False, add_generation_prompt=True)
    assert torch.equal(lm.prompt_embeddings(as_text), m.embed(m._ids(ids)))


def test_respond_is_deterministic_and_bad_audio_names_the_message(tiny_speechlm, speech_wav):
    msgs = _msgs(*speech_wav)
    a = tiny_speechlm.respond(msgs, GenParams(max_tokens=8))
    b = tiny_speechlm.respond(msgs, GenParams(max_tokens=8))
    assert a.text == b.text and a.audio is None and a.timings.wall > 0
    assert tiny_speechlm.identity()["adapter_sha256"] and tiny_speechlm.identity()["compress"] == "ctc"
    silent = _msgs(np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="message 3 part 0"):
        tiny_speechlm.respond(silent, GenParams(max_tokens=4))


def test_a_later_turn_reuses_the_earlier_prompt_and_gives_the_cold_reply(tiny_speechlm, speech_wav):
    cold = SpeechLM(adapter=tiny_speechlm.path, prefix_cache=0)
    warm = SpeechLM(adapter=tiny_speechlm.path, prefix_cache=2)
    samples, rate = speech_wav
    first = _msgs(samples, rate)
    # the next turn: the first one's audio stays in the history (e2e_history: audio), a new audio follows
    second = first + [{"role": "assistant", "content": "Which area?"},
                      {"role": "user", "content": [{"type": "audio", "samples": samples[: len(samples) // 2],
                                                    "rate": rate}]}]
    greedy = GenParams(max_tokens=8)
    for n, msgs in enumerate((first, second, second)):
        a, b = cold.respond(msgs, greedy), warm.respond(msgs, greedy)
        assert b.text == a.text
        reused, total = b.timings.extra["cached_prompt_tokens"], b.timings.extra["prompt_tokens"]
        assert a.timings.extra["cached_prompt_tokens"] == 0 and total == a.timings.extra["prompt_tokens"]
        if n == 0:
            assert reused == 0
        elif n == 1:  # everything up to the new turn, the first audio's speech vectors included
            assert len(warm.prompt_embeddings(first)) - 1 <= reused < total
        else:  # the same prompt again: all but its last position
            assert reused == total - 1
    assert len(warm._speech) == 2  # each audio encoded once, whatever prompts it was in
    assert warm.identity()["prefix_cache"] is True and "prefix_cache" not in cold.identity()


@pytest.mark.slow
def test_the_shipped_adapter_hears_held_out_voices():
    # The package's own weights (spokentod adapter export): measured 17.4 % test WER through the LLM
    # (reports/speech_adapter.md); here new sentences in two voices no training utterance used.
    from spokentod.adapter.train import wer

    lm = SpeechLM()
    asr = create("asr", {"name": "speechlm-asr", "max_new_tokens": 32})
    assert asr.identity()["adapter_sha256"] == lm.identity()["adapter_sha256"]
    texts = ["I need a cheap hotel in the north.", "Can you book a table for two at seven?",
             "What is the phone number of the museum?", "Thank you, that is all I need.",
             "I would like to leave on Saturday morning.", "Is there a train to London after ten?",
             "Please find me an Italian restaurant in the centre.", "How much does the ticket cost?"]
    # espeak voices and a Kokoro voice of the test split (no training utterance used them), on new sentences
    voices = [{"name": "espeak", "voice": "en-us+m3"}, {"name": "espeak", "voice": "en+f4"},
              {"name": "kokoro", "voice": "jf_tebukuro"}]
    tts = [create("tts", {k: v for k, v in c.items() if k != "voice"}) for c in voices]
    hyps = []
    for i, text in enumerate(texts):
        k = i % len(voices)
        hyps.append(asr.transcribe(tts[k].synthesize(text, voices[k]["voice"])).text)
    wav = tts[0].synthesize(texts[0], voices[0]["voice"])
    assert wer(texts, hyps) <= 0.30, hyps
    reply = lm.respond([{"role": "user", "content": [{"type": "audio", "samples": wav.samples, "rate": wav.rate}]}],
                       GenParams(max_tokens=16))
    assert reply.text.strip()


def test_speechlm_asr_transcribes_a_file_with_either_reader(tiny_speechlm, speech_wav, tmp_path):
    from spokentod.audio import write_wav

    path = tmp_path / "q.wav"
    write_wav(path, *speech_wav)
    llm = create("asr", {"name": "speechlm-asr", "adapter": str(tiny_speechlm.path), "max_new_tokens": 8})
    got = llm.transcribe(path)
    from spokentod.audio import load_audio

    feats = tiny_speechlm.encoder.encode([load_audio(path).samples])  # as written (the WAV is 16-bit)
    assert got.text == tiny_speechlm.model.transcribe(feats, 8)[0] and got.timings.rtf > 0
    ctc = create("asr", {"name": "speechlm-asr", "adapter": str(tiny_speechlm.path), "reader": "ctc"})
    assert ctc.transcribe(str(path)).text == tiny_speechlm.model.ctc_transcribe(feats)[0]
    assert ctc.identity_hash() != llm.identity_hash()
    import numpy as np
    assert llm.transcribe(np.zeros(8000, dtype=np.float32), rate=16000).text == ""
    with pytest.raises(ValueError, match="English-only"):
        llm.transcribe(path, language="de")


def test_with_a_tts_it_speaks_the_same_reply_chunk_by_chunk(tiny_speechlm, speech_wav):
    talking = SpeechLM(adapter=tiny_speechlm.path, tts={"name": "espeak"})
    msgs = _msgs(*speech_wav)
    said = talking.respond(msgs, GenParams(max_tokens=24))
    plain = tiny_speechlm.respond(msgs, GenParams(max_tokens=24))
    assert said.text == plain.text and said.audio is not None and said.audio.duration > 0.2
    assert 0 < said.timings.first <= said.timings.wall and said.timings.extra["chunks"] >= 1
    assert talking.speaks and not tiny_speechlm.speaks
    assert talking.identity()["talker"]["tts"]["name"] == "espeak" and tiny_speechlm.identity()["talker"] is None
    if len(plain.text) > 4:  # a stop string cuts the reply where it first occurs
        stop = plain.text[2:4]
        cut = tiny_speechlm.respond(msgs, GenParams(max_tokens=24, stop=[stop]))
        assert cut.text == plain.text[: plain.text.find(stop)].strip()


def test_an_e2e_system_on_a_text_out_audio_lm_is_scored_as_text(tiny_speechlm):
    from spokentod.systems import speaks
    from spokentod.systems.e2e import E2ESystem

    # speechlm answers in text only: its e2e system is text-only (no "reply audio missing" for every turn)
    assert speaks(E2ESystem(tiny_speechlm)) is False
    talking = create("audiolm", {"name": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"})
    assert speaks(E2ESystem(talking)) is True
    muted = create("audiolm", {"name": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "audio_out": False})
    assert speaks(E2ESystem(muted)) is False


def test_speechlm_answers_a_spoken_question_over_serve_to_the_official_openai_client(tiny_speechlm, speech_wav):
    import base64

    import openai
    from _serving import ServerThread  # tests/ is on the path (tests/conftest.py)

    from spokentod.audio import load_audio, wav_bytes
    from spokentod.serve.app import create_app

    app = create_app({"audiolm": {"name": "speechlm", "adapter": str(tiny_speechlm.path), "tts": {"name": "espeak"}}})
    with ServerThread(app) as s:
        client = openai.OpenAI(base_url=s.url, api_key="unused")
        data = base64.b64encode(wav_bytes(*speech_wav)).decode()
        resp = client.chat.completions.create(
            model="speechlm", modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"}, max_tokens=12,
            messages=[{"role": "system", "content": "You are a travel agent."},
                      {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}]}])
    msg = resp.choices[0].message
    spoken = load_audio(base64.b64decode(msg.audio.data))
    assert spoken.duration > 0.2 and msg.audio.transcript
    local = SpeechLM(adapter=tiny_speechlm.path).respond(
        [{"role": "system", "content": "You are a travel agent."},
         {"role": "user", "content": [{"type": "audio", "audio": wav_bytes(*speech_wav)}]}], GenParams(max_tokens=12))
    assert msg.audio.transcript == local.text  # the same reply as in process
