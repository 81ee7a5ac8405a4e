"""The listening page: one HTML page per run (`replies.html`, or `replies_<run>.html` when a report covers
several runs) with every spoken turn: the user's text and audio, then each system's reply — its text, the
standardized transcript when it differs, an audio player, the judge's scores and reasons, the failures the
judge found, a few audio metrics and any error. Filters (plain JS, no external resources) show or hide
replies by system, phase and failure type; the filter state lives in the URL hash
(``replies.html#system=cascade-gold,text-gold&phase=task&failure=repetition``), so a filtered view is a
link one can send.

Audio is not embedded: a study's replies are hundreds of MB of WAV (a 15-s Kokoro reply is 0.7 MB; base64
adds a third), far beyond what one page should hold. Every clip the page plays is placed beside it under
``audio/<run>/`` (a hard link, so no extra disk when the report is on the run's file system; a copy
otherwise) and referenced by a relative path: the report folder plays anywhere as a whole. Players do not
preload (Chromium allows about 1,000 live media players per page); after load, the page probes each
clip's header a few at a time, shows its duration, and marks a clip it cannot play as missing.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from spokentod.analysis.load import Bench, Run, metric
from spokentod.analysis.plots import system_colors
from spokentod.metrics.judge_parse import FAILURES, QUALITY
from spokentod.metrics.text import normalize_for_wer
from spokentod.rundir.layout import AUDIO_IN, METRICS
from spokentod.rundir.store import StoreError, latest_by_system

SHOWN = ("dnsmos_ovrl", "distillmos", "wer", "voice_sim", "sim_gold")  # metrics printed under each reply
NOT_JUDGED, FAILED, NO_FAILURE = "no_verdict", "failed_reply", "none"  # tokens: data-failures is space-separated

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #ccc;padding:10px 24px}
h1{font-size:20px;margin:0 0 6px}main{max-width:1300px;margin:0 auto;padding:8px 24px 64px}
fieldset{display:inline-block;border:1px solid #ddd;border-radius:4px;margin:2px 8px 2px 0;padding:2px 8px}
legend{font-size:12px;color:#555}label{margin-right:8px;white-space:nowrap}#shown{color:#555;margin-left:8px}
.banner{color:#7a1010;background:#fde8e8;border:1px solid #d62728;padding:4px 8px;border-radius:4px;margin:4px 0}
section.dialogue{margin:18px 0;border-top:2px solid #ddd}h2{font-size:16px;margin:10px 0 4px}
.turn{margin:8px 0 14px;padding-left:8px;border-left:3px solid #eee}
.user{background:#eef4fb;padding:6px 10px;border-radius:4px}.tag{color:#555;font-size:12px;margin-right:6px}
table{border-collapse:collapse;width:100%;margin-top:4px;background:#fff;table-layout:fixed}
td{vertical-align:top;border-bottom:1px solid #eee;padding:6px 8px}td.sys{white-space:nowrap;width:130px}
td.play{width:320px}td.judge{width:34%}audio{width:300px;height:32px}.heard{color:#555;font-style:italic;margin-top:2px}
.judge{font-size:12px;color:#333}.fail{color:#a01010}.err{color:#a01010;font-weight:600}
.metrics{font-size:12px;color:#666;margin-top:2px}.sw{display:inline-block;width:10px;height:10px;border-radius:2px;
margin-right:6px}.clip{font-size:11px;color:#888}.clip.missing{color:#a01010;font-weight:600}[hidden]{display:none}
"""

_SCRIPT = r"""
(function () {
  var boxes = document.querySelectorAll('#filters input[type=checkbox]'), failure = document.getElementById('f-failure');
  var rows = Array.prototype.slice.call(document.querySelectorAll('tr.reply'));
  function chosen(kind) { var out = [];
    document.querySelectorAll('#filters input[data-kind=' + kind + ']').forEach(function (b) { if (b.checked) out.push(b.value); });
    return out; }
  function apply() {
    var sys = chosen('system'), ph = chosen('phase'), f = failure.value, shown = 0;
    rows.forEach(function (r) {
      var d = r.dataset, ok = sys.indexOf(d.system) >= 0 && ph.indexOf(d.phase) >= 0 &&
        (!f || (' ' + d.failures + ' ').indexOf(' ' + f + ' ') >= 0);
      r.hidden = !ok; if (ok) shown++; });
    document.querySelectorAll('.turn').forEach(function (t) { t.hidden = !t.querySelector('tr.reply:not([hidden])'); });
    document.querySelectorAll('section.dialogue').forEach(function (s) { s.hidden = !s.querySelector('.turn:not([hidden])'); });
    document.getElementById('shown').textContent = shown + ' of ' + rows.length + ' replies shown';
    document.body.dataset.shown = shown;
  }
  function toHash() {
    var parts = [];
    ['system', 'phase'].forEach(function (k) {
      var all = document.querySelectorAll('#filters input[data-kind=' + k + ']').length, c = chosen(k);
      if (c.length < all) parts.push(k + '=' + c.map(encodeURIComponent).join(',')); });
    if (failure.value) parts.push('failure=' + encodeURIComponent(failure.value));
    history.replaceState(null, '', parts.length ? '#' + parts.join('&') : location.pathname);
  }
  function fromHash() {
    var want = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (p) { var kv = p.split('=');
      if (kv.length == 2) want[kv[0]] = kv[1].split(',').map(decodeURIComponent); });
    boxes.forEach(function (b) { b.checked = !want[b.dataset.kind] || want[b.dataset.kind].indexOf(b.value) >= 0; });
    failure.value = want.failure ? want.failure[0] : '';
    apply();
  }
  boxes.forEach(function (b) { b.addEventListener('change', function () { apply(); toHash(); }); });
  failure.addEventListener('change', function () { apply(); toHash(); });
  window.addEventListener('hashchange', fromHash);
  fromHash();
  // Probe each clip's header a few at a time (players themselves do not preload: Chromium caps live players).
  var players = Array.prototype.slice.call(document.querySelectorAll('audio')), next = 0, done = 0, ok = 0;
  function probe() {
    if (next >= players.length) return;
    var p = players[next++], a = new Audio(), label = p.parentNode.querySelector('.clip');
    function finish(good) {
      p.dataset.state = good ? 'ok' : 'missing';
      if (good) { ok++; p.dataset.duration = a.duration.toFixed(2); label.textContent = a.duration.toFixed(1) + ' s'; }
      else { label.textContent = 'audio file missing: ' + p.getAttribute('src'); label.classList.add('missing'); }
      a.removeAttribute('src'); a.load(); done++;
      if (done == players.length) document.body.dataset.audio = ok + '/' + players.length;
      probe(); }
    a.preload = 'metadata';
    a.addEventListener('loadedmetadata', function () { finish(true); }, {once: true});
    a.addEventListener('error', function () { finish(false); }, {once: true});
    a.src = p.getAttribute('src');
  }
  if (!players.length) document.body.dataset.audio = '0/0';
  for (var i = 0; i < 4; i++) probe();
})();
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _place(src: Path, run: Run, out: Path) -> str:
    """Hard-link (else copy) `src` to out/audio/<run>/... and return its path relative to `out`."""
    try:
        rel = src.resolve().relative_to(run.path.resolve())
    except ValueError:  # audio outside the run (a corpus with its own recordings)
        rel = Path("external") / f"{hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:10]}_{src.name}"
    dest = out / "audio" / _safe(run.name) / rel
    if not (dest.exists() and os.path.samefile(dest, src)):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        try:
            os.link(src, dest)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(src, dest)
    return dest.relative_to(out).as_posix()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _user_audio(rec: dict[str, Any], run: Run) -> Path | None:
    """The user turn's audio: relative to <run>/audio_in when the bench rendered it, else to the dataset."""
    raw = rec.get("user_audio")
    if not raw:
        return None
    dataset = (run.meta.get("config") or {}).get("dataset") or {}
    bases = [run.path / AUDIO_IN]
    for key in ("manifest", "path"):
        if dataset.get(key):
            p = Path(dataset[key])
            bases.append(p.parent if p.suffix else p)
    for p in [Path(raw)] if Path(raw).is_absolute() else [b / raw for b in bases]:
        if p.is_file():
            return p
    return None


def _player(path: Path | None, run: Run, out: Path, what: str) -> str:
    if path is None or not path.is_file():
        return f'<span class="clip missing">no {what} audio</span>'
    return (f'<audio controls preload="none" src="{_e(_place(path, run, out))}"></audio>'
            '<div class="clip">…</div>')


def _failures(judge: dict[str, Any], values: dict[str, Any]) -> list[str]:
    present = []
    for f in FAILURES:
        item = (judge.get("failures") or {}).get(f)
        if values.get(f"fail_{f}_present") or (isinstance(item, dict) and item.get("present") is True):
            present.append(f)
    return present


def _judge_html(judge: dict[str, Any], values: dict[str, Any], present: list[str], missing: dict[str, str]) -> str:
    parts = []
    for k in QUALITY:
        item = judge.get(k) if isinstance(judge.get(k), dict) else {}
        if values.get(k) is not None or item.get("reason"):
            score = "–" if values.get(k) is None else f"{values[k]:.0f}"
            parts.append(f"<div><b>{_e(k)} {score}</b>{': ' + _e(item['reason']) if item.get('reason') else ''}</div>")
    for f in present:
        item = (judge.get("failures") or {}).get(f) or {}
        sev = values.get(f"fail_{f}_severity")
        parts.append(f'<div class="fail"><b>{_e(f.replace("_", " "))}</b>'
                     f'{f" {sev:.0f}" if isinstance(sev, int | float) else ""}'
                     f'{": " + _e(item["reason"]) if isinstance(item, dict) and item.get("reason") else ""}</div>')
    if judge.get("primary_failure"):
        parts.append(f"<div>primary failure: {_e(judge['primary_failure'])}</div>")
    if not parts:
        why = next((missing[k] for k in (*QUALITY, *(f"fail_{f}_present" for f in FAILURES)) if k in missing), None)
        return f'<span class="tag">no judge verdict{": " + _e(why) if why else ""}</span>'
    return "".join(parts)


def _reply_row(label: str, color: str, phase: str, rec: dict[str, Any], mrec: dict[str, Any] | None, run: Run,
               out: Path) -> str:
    m = mrec or {}
    values = {k: v for k, v in (m.get("metrics") or {}).items() if v is not None}
    judge = m.get("judge") if isinstance(m.get("judge"), dict) else {}
    present = _failures(judge, values)
    judged = any(k.startswith("fail_") for k in values) or any(k in values for k in QUALITY)
    if rec.get("error"):
        kinds = [FAILED]
    elif not judged:
        kinds = [NOT_JUDGED]
    else:
        kinds = present or [NO_FAILURE]
    text, heard = rec.get("text") or "", m.get("transcript")
    said = f"<div>{_e(text)}</div>" if text else ""
    if heard is not None and normalize_for_wer(heard) != normalize_for_wer(text):  # differs in words
        said += f'<div class="heard">heard: {_e(heard) or "(nothing)"}</div>'
    if rec.get("error"):
        said += f'<div class="err">error: {_e(rec["error"])}</div>'
    shown = " · ".join(f"{metric(n).label} {values[n] * metric(n).factor:.{metric(n).digits}f}"
                       f"{' %' if metric(n).unit == '%' else ''}" for n in SHOWN if n in values)
    audio_path = rec.get("audio_path")
    path = None if not audio_path else (Path(audio_path) if Path(audio_path).is_absolute()
                                        else run.path / audio_path)
    play = _player(path, run, out, "reply") if audio_path else '<span class="tag">text only</span>'
    return (f'<tr class="reply" data-system="{_e(label)}" data-phase="{_e(phase)}" data-failures="{_e(" ".join(kinds))}">'
            f'<td class="sys"><span class="sw" style="background:{color}"></span>{_e(label)}</td>'
            f'<td>{said}<div class="metrics">{_e(shown)}</div></td><td class="play">{play}</td>'
            f'<td class="judge">{_judge_html(judge, values, present, m.get("missing") or {})}</td></tr>')


def _plan_order(run: Run) -> list[str]:
    try:
        return [d for d, _ in json.loads((run.path / "plan.json").read_text(encoding="utf-8"))["dialogues"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def page(bench: Bench, run: Run, out: Path, banner: str | None = None) -> str:
    """The listening page of one run (audio placed under out/audio/<run>/)."""
    try:
        metrics = latest_by_system(run.path / METRICS)
    except StoreError:
        metrics = {}
    colors = system_colors(bench.systems)
    systems = [s for s in run.systems if run.results.get(s)]
    turns: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
    for s in systems:
        for key, rec in run.results[s].items():
            turns.setdefault(key, {})[s] = rec
    order = {d: i for i, d in enumerate(_plan_order(run))}
    keys = sorted(turns, key=lambda k: (order.get(k[0], len(order)), k[0], k[2], k[1]))
    ordinal: dict[tuple[str, int], int] = {}  # R1..Rn: position among the dialogue's user turns
    seen: Counter = Counter()
    for d, t in sorted({(d, t) for d, t, _ in keys}):
        seen[d] += 1
        ordinal[(d, t)] = seen[d]
    phases = list(dict.fromkeys(next(iter(turns[k].values())).get("phase") or "(none)" for k in keys))
    seeds = len({k[2] for k in keys}) > 1
    body, current, n_replies = [], None, 0
    for key in keys:
        d, t, seed = key
        recs = turns[key]
        first = next(iter(recs.values()))
        phase = first.get("phase") or "(none)"
        if d != current:
            if current is not None:
                body.append("</section>")
            intent = first.get("intent")
            body.append(f'<section class="dialogue" data-dialogue="{_e(d)}"><h2>{_e(d)}'
                        f'{" · " + _e(intent) if intent else ""}</h2>')
            current = d
        user = _player(_user_audio(first, run), run, out, "user") if first.get("user_audio") else ""
        rows = []
        for s in systems:
            if s in recs:
                label = bench.label[(run.name, s)]
                rows.append(_reply_row(label, colors.get(label, "#888"), phase, recs[s], metrics.get(s, {}).get(key),
                                       run, out))
        n_replies += len(rows)
        body.append(f'<div class="turn" data-phase="{_e(phase)}"><div class="user"><span class="tag">'
                    f'R{ordinal[(d, t)]} · {_e(phase)} · turn {t}{f" · seed {seed}" if seeds else ""}</span>'
                    f'<b>user:</b> {_e(first.get("user_text") or "")} {user}</div>'
                    f'<table>{"".join(rows)}</table></div>')
    if current is not None:
        body.append("</section>")
    labels = [bench.label[(run.name, s)] for s in systems]
    kinds = (NO_FAILURE, *FAILURES, NOT_JUDGED, FAILED)
    filters = ('<div id="filters"><fieldset><legend>system</legend>' + "".join(
        f'<label><input type="checkbox" data-kind="system" value="{_e(s)}" checked><span class="sw" '
        f'style="background:{colors.get(s, "#888")}"></span>{_e(s)}</label>' for s in labels) +
        '</fieldset><fieldset><legend>phase</legend>' + "".join(
        f'<label><input type="checkbox" data-kind="phase" value="{_e(p)}" checked>{_e(p)}</label>' for p in phases) +
        '</fieldset><label>failure <select id="f-failure"><option value="">any</option>' + "".join(
        f'<option value="{_e(k)}">{_e(k.replace("_", " "))}</option>' for k in kinds) +
        '</select></label><span id="shown"></span></div>')
    warn = f'<div class="banner">⚠ {_e(banner)}</div>' if banner else ""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{_e(run.name)}: every reply</title><style>{_CSS}</style></head><body><header>"
            f"<h1>{_e(run.name)}: every spoken turn ({n_replies} replies, {len({k[0] for k in keys})} "
            f"dialogues)</h1>{warn}{filters}</header><main>{''.join(body)}</main>"
            f"<script>{_SCRIPT}</script></body></html>")


def _records_say_weak(run: Run) -> bool:
    try:
        metrics = latest_by_system(run.path / METRICS)
    except StoreError:
        return False
    return any(isinstance(r.get("judge"), dict) and r["judge"].get("weak") for recs in metrics.values()
               for r in recs.values())


def page_names(bench: Bench) -> list[str]:
    """The listening page's file name for each run, in run order."""
    return ["replies.html" if len(bench.runs) == 1 else f"replies_{_safe(r.name)}.html" for r in bench.runs]


def write_pages(bench: Bench, out: Path, banner: str | None = None) -> dict[str, Path]:
    """One listening page per run into `out`; returns {file name: path}."""
    written = {}
    for run, name in zip(bench.runs, page_names(bench)):
        weak = banner if run.judge.weak else None
        if weak is None and _records_say_weak(run):  # summary.json may have been rewritten without the judge
            weak = "The judge is flagged weak in these records: its scores and reasons only exercise the pipeline."
        (out / name).write_text(page(bench, run, out, weak), encoding="utf-8")
        written[name] = out / name
    return written
