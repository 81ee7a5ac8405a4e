"""The listening page (analysis/listening.py): every spoken turn with an audio player, the judge's reasons,
and filters; checked as files here and in headless Chromium (players load their clip, a missing clip is
marked, the URL-hash filters hide and show the right replies).

The run: 3 dialogues x 3 user turns (chitchat, transition, task); `cascade` speaks (real WAV files, 0.4 s
tones), `text` does not. The judge found repetition in cascade's replies to turn 2 of every dialogue, nothing
elsewhere; cascade d1 turn 4 failed (no audio, no metrics); cascade d2 turn 0's audio file was deleted after
the run; text d0 turn 4 has no judge verdict (the call failed).
"""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_report_browser import CHROMIUM, chromium

from spokentod.analysis.report import write_report
from spokentod.audio import write_wav
from spokentod.rundir.records import MetricRecord, ResultRecord, RunMeta

PHASES = {0: "chitchat", 2: "transition", 4: "task"}
REASON = "The reply repeats the previous sentence <word for word>."


def _judge(rep: bool) -> tuple[dict, dict]:
    metrics = {"naturalness": 40.0 if rep else 80.0, "consistency": 70.0,
               "fail_repetition_present": rep, "fail_repetition_severity": 60.0 if rep else 0.0,
               "fail_generic_present": False, "fail_generic_severity": 0.0}
    judge = {"naturalness": {"reason": "Sounds natural enough.", "score": metrics["naturalness"]},
             "failures": {"repetition": {"present": rep, "severity": 60 if rep else 0, "reason": REASON if rep else ""}},
             "primary_failure": "repetition" if rep else "none", "weak": True}
    return metrics, judge


def build_spoken_run(root: Path) -> Path:
    run = root / "spoken"
    for sub in ("metrics", "results", "audio_in/audio"):
        (run / sub).mkdir(parents=True)
    meta = RunMeta(status="finished", systems={"cascade": {"type": "cascade"}, "text": {"type": "text"}},
                   config={"dataset": {"corpus": "demo"}, "systems": {"cascade": {"type": "cascade"},
                                                                      "text": {"type": "text"}}})
    meta.judge = {"identity": {"name": "smollm2"}, "weak": True, "weak_reason": "135M"}
    (run / "run.json").write_text(json.dumps(meta.to_json(exclude_unset=True)))
    tone = (0.2 * np.sin(2 * np.pi * 220 * np.arange(9600) / 24000)).astype(np.float32)
    for s in ("cascade", "text"):
        res, mets = [], []
        for d in range(3):
            for t, phase in PHASES.items():
                user = f"audio/d{d}/{t:03d}_user.wav"
                write_wav(run / "audio_in" / user, tone, 24000)
                failed = (s, d, t) == ("cascade", 1, 4)
                audio = None if s == "text" or failed else f"audio_out/{s}/d{d}/{t:03d}.wav"
                if audio:
                    write_wav(run / audio, tone, 24000)
                text = f"{s} reply {d}/{t}" + (" <script>alert(1)</script>" if (d, t) == (0, 0) else "")
                res.append(ResultRecord(system=s, dialogue_id=f"d{d}", turn=t, phase=phase, user_text=f"user {d}/{t}",
                                        user_audio=user, text=None if failed else text, audio_path=audio,
                                        error="llm: timeout" if failed else None).to_json())
                missing = {}
                if failed:
                    metrics, judge = {}, {}
                elif (s, d, t) == ("text", 0, 4):
                    metrics, judge = {"naturalness": None}, {}
                    missing = {"naturalness": "judge call failed: timeout"}
                else:
                    metrics, judge = _judge(t == 2 and s == "cascade")
                mets.append(MetricRecord(system=s, dialogue_id=f"d{d}", turn=t, phase=phase, turn_ordinal=t // 2 + 1,
                                         metrics=metrics, missing=missing, judge=judge, text=text,
                                         transcript=text if s == "text" else f"heard {d}/{t}").to_json())
        (run / "results" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in res))
        (run / "metrics" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mets))
    (run / "audio_out/cascade/d2/000.wav").unlink()
    return run


class Rows(HTMLParser):
    """(system, phase, failures, hidden) of every reply row, and the state of every <audio>."""

    def __init__(self):
        super().__init__()
        self.rows, self.audio = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "reply" in (a.get("class") or ""):
            self.rows.append((a["data-system"], a["data-phase"], a["data-failures"], "hidden" in a))
        if tag == "audio":
            self.audio.append((a["src"], a.get("data-state"), a.get("data-duration")))


def parse(text: str) -> Rows:
    p = Rows()
    p.feed(text)
    return p


def test_page_has_a_player_per_clip_beside_it_and_the_judges_reasons(tmp_path):
    run = build_spoken_run(tmp_path)
    files = write_report([run], tmp_path / "report")
    page = files["replies.html"].read_text()
    rows = parse(page)
    assert len(rows.rows) == 18 and not any(r[3] for r in rows.rows)
    srcs = [src for src, _, _ in rows.audio]
    assert len(srcs) == 9 + 8 - 1  # user clips + cascade replies, minus the failed one; the deleted one has none
    for src in srcs:
        assert not src.startswith(("/", "file:")) and (tmp_path / "report" / src).is_file(), src
    user = tmp_path / "report" / "audio/spoken/audio_in/audio/d0/000_user.wav"
    assert os.path.samefile(user, run / "audio_in/audio/d0/000_user.wav")  # a hard link, not a copy
    assert page.count("no reply audio") == 1  # the deleted file
    assert html_escaped(REASON) in page and "<script>alert(1)" not in page
    assert "heard: heard 0/0" in page and "error: llm: timeout" in page
    assert "no judge verdict: judge call failed: timeout" in page
    assert "heard:" not in page.split('data-system="text"')[1].split("</tr>")[0]  # same words: not repeated
    kinds = {(s, f) for s, _, f, _ in rows.rows}
    assert ("cascade", "repetition") in kinds and ("cascade", "failed_reply") in kinds
    assert ("text", "no_verdict") in kinds and ("text", "none") in kinds
    assert "replies.html" in files["report.md"].read_text()


def html_escaped(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _dom(tmp_path: Path, url: str) -> str:
    return chromium(tmp_path / "profile", "--virtual-time-budget=15000", "--dump-dom", url).stdout


@pytest.mark.slow
def test_players_load_and_filters_hide_rows_in_chromium(tmp_path):
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs it (.ci/ensure-chromium)"
    files = write_report([build_spoken_run(tmp_path)], tmp_path / "report")
    (tmp_path / "report/audio/spoken/audio_in/audio/d1/002_user.wav").unlink()  # moved without one clip
    url = files["replies.html"].resolve().as_uri()

    dom = _dom(tmp_path, url)
    rows = parse(dom)
    assert 'data-audio="15/16"' in dom and dom.count('data-shown="18"') == 1
    states = {src: (state, dur) for src, state, dur in rows.audio}
    assert states["audio/spoken/audio_in/audio/d1/002_user.wav"][0] == "missing"
    assert all(s == "ok" and abs(float(d) - 0.4) < 0.01 for src, (s, d) in states.items() if "d1/002_user" not in src)
    assert "audio file missing: audio/spoken/audio_in/audio/d1/002_user.wav" in dom

    for hash_, want in [
        ("#system=cascade&phase=task", lambda s, p, f: s == "cascade" and p == "task"),
        ("#failure=repetition", lambda s, p, f: "repetition" in f.split()),
        ("#phase=chitchat,transition&failure=none", lambda s, p, f: p != "task" and f == "none"),
        ("#failure=failed_reply", lambda s, p, f: f == "failed_reply"),
    ]:
        dom = _dom(tmp_path, url + hash_)
        rows = parse(dom)
        shown = [r[:3] for r in rows.rows if not r[3]]
        assert shown == [r[:3] for r in rows.rows if want(*r[:3])] and shown, hash_
        assert f'data-shown="{len(shown)}"' in dom and f"{len(shown)} of 18 replies shown" in dom
    dom = _dom(tmp_path, url + "#failure=failed_reply")  # only d1 has a failed reply: d0 and d2 are hidden
    assert re.findall(r'<section class="dialogue" data-dialogue="(d\d)"( hidden="")?', dom) == [
        ("d0", ' hidden=""'), ("d1", ""), ("d2", ' hidden=""')]
