"""Do DNSMOS and DistillMOS rank the same audio the same way, when its quality varies and when it does not?

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/mos_agreement.py [--texts 6]

Clips: --texts demo agent turns spoken by two Kokoro and two espeak-ng voices (TTS cached in the user cache
dir), each clean and with white noise at 20, 10 and 0 dB SNR. Printed: Spearman's rho (with the report's
Fisher-z 95 % CI) between DNSMOS OVRL and DistillMOS within narrow sets (clean Kokoro only: what one
cascade's replies look like) and wide ones (all clean clips, everything), the mean of each predictor per
condition, and the cost per clip. A bench report gives the same rho over a run's replies
(analysis/mos_section.py); this says what to expect from it.

Measured (--texts 6, 96 clips; 2 busy cores), rho [95 % CI]: clean Kokoro (n 12) 0.31 [-0.34, 0.76]; clean
espeak (12) -0.29 [-0.75, 0.35]; all clean (24) 0.65 [0.32, 0.84]; Kokoro clean + noisy (48) 0.92
[0.86, 0.96]; everything (96) 0.74 [0.63, 0.82]. Means, DNSMOS / DistillMOS: Kokoro clean 3.25 / 4.06,
0 dB 1.58 / 1.75; espeak clean 2.81 / 2.50, 20 dB 2.28 / 2.72 (DistillMOS rates lightly noisy espeak above
clean espeak). CPU per clip (loaded machine): DNSMOS 3.6 s (clips looped to >= 9 s), DistillMOS 1.5 s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from voice_embedders import texts

from spokentod.analysis.stats import spearman_ci
from spokentod.audio import as_waveform
from spokentod.backends.base import create
from spokentod.backends.cache import Cache, cached
from spokentod.metrics.audio import dnsmos
from spokentod.metrics.distillmos import model as distillmos
from spokentod.progress import progress_bar

VOICES = {"kokoro": ("jf_alpha", "jm_kumo"), "espeak": ("en-us", "en-gb+f4")}
SNRS = (None, 20, 10, 0)  # None: clean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=6)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    clips = []  # (family, snr, samples)
    for family, voices in VOICES.items():
        tts = cached(create("tts", {"name": family}), Cache())
        for v in voices:
            for line in texts(args.texts):
                got = tts.synthesize(line, v)
                x = as_waveform(got.samples, rate=got.rate, target_rate=16000).samples.astype(np.float32)
                for snr in SNRS:
                    if snr is None:
                        clips.append((family, snr, x))
                        continue
                    noise = rng.standard_normal(len(x)).astype(np.float32)
                    noise *= np.sqrt(np.mean(x ** 2) / np.mean(noise ** 2)) / 10 ** (snr / 20)
                    clips.append((family, snr, x + noise))
    model = distillmos()
    model.predict(clips[0][2])  # load outside the timing
    scores, cost = [], {"dnsmos": 0.0, "distillmos": 0.0}
    with progress_bar() as bar:
        task = bar.add_task("MOS", total=len(clips))
        for family, snr, x in clips:
            t0 = time.process_time()
            a = dnsmos(x)["dnsmos_ovrl"]
            t1 = time.process_time()
            b = model.predict(x)
            cost["dnsmos"] += t1 - t0
            cost["distillmos"] += time.process_time() - t1
            scores.append((family, snr, a, b))
            bar.advance(task)
    print(f"{len(clips)} clips: {args.texts} texts x {sum(len(v) for v in VOICES.values())} voices x "
          f"{len(SNRS)} conditions\n")
    print(f"{'set':<28} {'n':>4} {'rho':>6}  95 % CI")
    for name, keep in [("clean Kokoro", lambda f, s: f == "kokoro" and s is None),
                       ("clean espeak", lambda f, s: f == "espeak" and s is None),
                       ("all clean", lambda f, s: s is None),
                       ("Kokoro, clean + noisy", lambda f, s: f == "kokoro"),
                       ("everything", lambda f, s: True)]:
        sel = [(a, b) for f, s, a, b in scores if keep(f, s)]
        c = spearman_ci([a for a, _ in sel], [b for _, b in sel])
        print(f"{name:<28} {c.n:>4} {c.r:6.2f}  [{c.lo:.2f}, {c.hi:.2f}]")
    print(f"\n{'condition':<18} {'DNSMOS OVRL':>11} {'DistillMOS':>10}")
    for family in VOICES:
        for snr in SNRS:
            sel = [(a, b) for f, s, a, b in scores if f == family and s == snr]
            print(f"{family + (' clean' if snr is None else f' {snr} dB'):<18} {np.mean([a for a, _ in sel]):11.2f} "
                  f"{np.mean([b for _, b in sel]):10.2f}")
    print(f"\ncpu s per clip: DNSMOS {cost['dnsmos'] / len(clips):.3f}, DistillMOS {cost['distillmos'] / len(clips):.3f}")


if __name__ == "__main__":
    main()
