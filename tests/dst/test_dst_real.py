"""Real MultiWOZ 2.1 dev references (../shared/data) against systematically perturbed predictions whose
JGA is known by construction."""

from __future__ import annotations

import json
import re

import pytest

from spokentod.dst.data import ontology as O
from spokentod.dst.score.scorer import score_files

CORRUPT = "zzqx qqq"


def reference_turns(path):
    """[(dialogue_id, Turn.index, state)] for every user turn: the corpus loader, or a minimal reading of the
    ConvLab file (user turn i gets the state in the metadata of system turn i + 1) when it is not there."""
    try:
        from spokentod.data import corpora

        return "multiwoz21", [(d.id, t.index, t.state) for d in corpora.load("multiwoz21", path)
                              for t in d.user_turns if t.state is not None]
    except KeyError:
        pass
    out = []
    for did, d in json.loads(path.read_text()).items():
        for i in range(0, len(d["log"]) - 1, 2):
            state = {}
            for dom, parts in d["log"][i + 1]["metadata"].items():
                for part in ("semi", "book"):
                    for s, v in parts[part].items():
                        if s != "booked" and v not in ("", "not mentioned", "none"):
                            state.setdefault(dom, {})[("book " if part == "book" else "") + s] = v
            out.append((did, i, state))
    return None, out


def perturb(turns):
    """Predictions + the expected counts. Turn j (over all turns) gets, by j % 7:
    0 dropped (missing: wrong)          3 one value corrupted (wrong)
    1 values upper-cased, spaced        (right, also exactly)
    2 slot names restyled               ("book people" → "bookpeople", "pricerange" → "price range": right)
    5 a pm time written "5:30 pm", or a long DB name missing one letter (right, but not exactly)
    others untouched. Every 10th dialogue also gets a prediction for a turn that does not exist (extra)."""
    db_names = {v for d in ("attraction", "hotel", "restaurant") for v in O.multiwoz().values[d]["name"]}
    preds, wrong, not_exact, extra, seen = [], 0, 0, 0, set()
    for j, (did, idx, state) in enumerate(turns):
        state = {d: dict(s) for d, s in state.items()}
        kind = j % 7
        if did not in seen:
            seen.add(did)
            if len(seen) % 10 == 0:
                preds.append({"dialogue_id": did, "turn": 999, "state": {}})
                extra += 1
        if kind == 0:
            wrong += 1
            continue
        if kind == 3:
            if state:
                d = next(iter(state))
                state[d][next(iter(state[d]))] = CORRUPT
            else:
                state = {"hotel": {"area": CORRUPT}}
            wrong += 1
        elif kind == 1:
            state = {d: {s: f"  {v.upper()} " for s, v in slots.items()} for d, slots in state.items()}
        elif kind == 2:
            def restyle(s: str) -> str:
                return s.replace("book ", "book").replace("pricerange", "price range")

            state = {d: {restyle(s): v for s, v in slots.items()} for d, slots in state.items()}
        elif kind == 5:
            changed = False
            for slots in state.values():
                for s, v in slots.items():
                    m = re.fullmatch(r"(1[3-9]|2[0-3]):([0-5]\d)", v) if isinstance(v, str) else None
                    if m:
                        slots[s], changed = f"{int(m.group(1)) - 12}:{m.group(2)} pm", True
                    elif s == "name" and v in db_names and len(v) >= 20:
                        slots[s], changed = v[:5] + v[6:], True
            not_exact += changed
        preds.append({"dialogue_id": did, "turn": idx, "state": state})
    return preds, wrong, not_exact, extra


@pytest.mark.slow
def test_multiwoz21_dev_perturbed(data_dir, tmp_path):
    path = data_dir / "multiwoz" / "mwz21_convlab2" / "val.json"
    corpus, turns = reference_turns(path)
    assert len(turns) == 7365
    preds, wrong, not_exact, extra = perturb(turns)
    pred_file = tmp_path / "pred.jsonl"
    pred_file.write_text("".join(json.dumps(p) + "\n" for p in preds))
    if corpus:
        refs_kw = {"references": path, "references_corpus": corpus}
    else:
        ref_file = tmp_path / "ref.jsonl"
        ref_file.write_text("".join(json.dumps({"dialogue_id": d, "turn": i, "state": s}) + "\n"
                                    for d, i, s in turns))
        refs_kw = {"references": ref_file}
    r = score_files(pred_file, **refs_kw, bootstrap=200)
    n = len(turns)
    assert not_exact > 300 and wrong > 2000  # the perturbations really happened
    assert r["turns"] == n and r["missing_turns"] == -(-n // 7) and r["extra_turns"] == extra
    assert r["jga"] == pytest.approx(1 - wrong / n, abs=1e-12)
    assert r["jga_exact"] == pytest.approx(1 - (wrong + not_exact) / n, abs=1e-12)
    assert r["jga_ci"][0] < r["jga"] < r["jga_ci"][1]
    assert r["unknown_slot_predictions"] == 0 and r["slot_key_f1"] < 1.0

    # the same predictions in MultiWOZ_Evaluation format (one entry per user turn, so a dropped turn cannot be
    # expressed there: it gets the corrupted state instead, which is wrong either way)
    by_turn = {(p["dialogue_id"], p["turn"]): p["state"] for p in preds}
    mwz_eval: dict[str, list] = {}
    for did, idx, _ in turns:
        state = by_turn.get((did, idx), {"hotel": {"area": CORRUPT}})
        mwz_eval.setdefault(did.lower(), []).append({"state": state})
    eval_file = tmp_path / "pred.json"
    eval_file.write_text(json.dumps(mwz_eval))
    r2 = score_files(eval_file, **refs_kw, turn_index="ordinal")
    assert r2["jga"] == pytest.approx(r["jga"], abs=1e-12) and r2["missing_turns"] == 0
