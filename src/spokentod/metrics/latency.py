"""Latency per stage, read from the timings each system recorded (seconds; see systems/*.py).

    lat_asr          ASR of the user turn (cascade)
    lat_ttft         from the start of the turn to the first LLM token (cascade, text)
    lat_llm          LLM generation (cascade, text); for an E2E audio LM, its whole call
    lat_tts          speech synthesis, summed over sentences when streamed (cascade)
    lat_first_audio  from the start of the turn to the first reply audio being ready
    lat_total        the whole turn inside the system
    rtf_tts          lat_tts / reply audio seconds (< 1: faster than real time)

A stage a system does not have is missing with that reason, not 0. Note that a cached backend call
reports the original call's timings (backends/cache.py), so a resumed run's latencies stay meaningful.
"""

from __future__ import annotations

from typing import Any

from spokentod.metrics.registry import MetricGroup, MetricResult, Output, ScoredReply, register

STAGES = {"lat_asr": ("asr",), "lat_ttft": ("ttft",), "lat_llm": ("llm", "audiolm"), "lat_tts": ("tts",),
          "lat_first_audio": ("first_audio",), "lat_total": ("total",)}


def _latency(reply: ScoredReply, res: Any) -> MetricResult:
    timings = reply.record.get("timings") or {}
    values: dict[str, float | None] = {}
    missing: dict[str, str] = {}
    for name, keys in STAGES.items():
        got = next((timings[k] for k in keys if isinstance(timings.get(k), (int, float))), None)
        values[name] = float(got) if got is not None else None
        if got is None:
            missing[name] = f"no {keys[0]} stage timing for this system"
    secs = reply.record.get("audio_seconds")
    if values["lat_tts"] is not None and secs:
        values["rtf_tts"] = values["lat_tts"] / float(secs)
    else:
        values["rtf_tts"] = None
        missing["rtf_tts"] = "no tts stage timing" if values["lat_tts"] is None else "no reply audio length"
    return MetricResult(values, missing)


LABELS = {"lat_asr": "ASR", "lat_ttft": "LLM time to first token", "lat_llm": "LLM total", "lat_tts": "TTS",
          "lat_first_audio": "first audio", "lat_total": "end to end"}

register(MetricGroup("latency", "1", (*(Output(n, LABELS[n], "latency", -1, unit="s", headline=n == "lat_total")
                                        for n in STAGES),
                                      Output("rtf_tts", "TTS real-time factor", "latency", -1)), _latency, needs=("record",),
                doc="per-stage latency from the results' timings"))
