"""Scoring on hand-built cases whose numbers are computed by hand in the comments."""

from __future__ import annotations

import json
import random

import pytest

from spokentod.dst.data import ontology as O
from spokentod.dst.data.normalize import Policy
from spokentod.dst.score.scorer import score, score_files
from spokentod.dst.score.states import Predictions, TurnState
from spokentod.errors import DataError

REFS = [  # dialogue d1: user turns 0, 2, 4; d2: 0, 2
    {"dialogue_id": "d1", "turn": 0, "state": {"hotel": {"area": "centre"}}},
    {"dialogue_id": "d1", "turn": 2, "state": {"hotel": {"area": "centre", "pricerange": "cheap"}}},
    {"dialogue_id": "d1", "turn": 4,
     "state": {"hotel": {"area": "centre", "pricerange": "cheap", "book people": "2"}}},
    {"dialogue_id": "d2", "turn": 0, "state": {"train": {"departure": "cambridge"}}},
    {"dialogue_id": "d2", "turn": 2, "state": {"train": {"departure": "cambridge", "day": "monday"}}},
]


def write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def run(tmp_path, preds, refs=REFS, **kw):
    kw.setdefault("ontology", "multiwoz")
    return score_files(write(tmp_path / "p.jsonl", preds), write(tmp_path / "r.jsonl", refs), **kw)


def test_reference_against_itself_is_perfect(tmp_path):
    r = run(tmp_path, REFS, bootstrap=200)
    assert r["jga"] == r["jga_exact"] == r["slot_f1"] == r["slot_key_f1"] == 1.0
    assert r["jga_ci"] == [1.0, 1.0]
    assert r["turns"] == 5 and r["missing_turns"] == r["extra_turns"] == 0


def test_known_perturbations(tmp_path):
    preds = [
        REFS[0],  # right
        {"dialogue_id": "d1", "turn": 2,  # 1 TP 1 FP 1 FN
         "state": {"hotel": {"area": "centre", "pricerange": "expensive"}}},
        {"dialogue_id": "d1", "turn": 4, "state": {"hotel": {"area": "centre", "pricerange": "cheap",
                                                             "book people": "2", "stars": "4"}}},  # 3 TP 1 FP
        REFS[3],  # right; d2 turn 2 missing: 2 FN
        {"dialogue_id": "d1", "turn": 6, "state": {}},  # extra
        '{"dialogue_id": "d1", "turn": 8, "state": ',  # malformed
    ]
    r = run(tmp_path, preds)
    assert r["jga"] == pytest.approx(2 / 5) and r["jga_exact"] == pytest.approx(2 / 5)
    # TP 6, FP 2, FN 3
    assert r["slot_precision"] == pytest.approx(6 / 8)
    assert r["slot_recall"] == pytest.approx(6 / 9)
    assert r["slot_f1"] == pytest.approx(12 / 17)
    # keys: TP 7 (1 + 2 + 3 + 1), FP 1 (stars), FN 2 (missing turn)
    assert r["slot_key_f1"] == pytest.approx(14 / 17)
    assert (r["missing_turns"], r["extra_turns"], r["malformed_records"]) == (1, 1, 1)
    assert r["examples"]["missing"] == ["d2:2"] and r["examples"]["extra"] == ["d1:6"]
    assert "line 6" in r["examples"]["malformed"][0]
    # hotel active in d1's three turns (1 right), train in d2's two (1 right)
    assert r["per_domain"] == {"hotel": pytest.approx(1 / 3), "train": pytest.approx(1 / 2)}
    assert r["per_domain_turns"] == {"hotel": 3, "train": 2}


def test_missing_turns_lower_jga(tmp_path):
    assert run(tmp_path, REFS[:3])["jga"] == pytest.approx(3 / 5)  # the reference evaluation, skipping missing turns, said 1.0
    assert run(tmp_path, [])["jga"] == 0.0


def test_malformed_records_are_reported_and_counted_wrong(tmp_path):
    bad = [dict(REFS[0], state="centre"), dict(REFS[1], turn="two"), {"turn": 4, "state": {}},
           dict(REFS[3], state={"train": {"day": {"x": 1}}}), "not json", *REFS[4:]]
    r = run(tmp_path, bad)
    assert r["malformed_records"] == 5 and r["missing_turns"] == 4 and r["jga"] == pytest.approx(1 / 5)


def test_normalized_vs_exact(tmp_path):
    preds = [
        {"dialogue_id": "d1", "turn": 0, "state": {"hotel": {"area": " CENTRE "}}},  # exact ok (case, space)
        {"dialogue_id": "d1", "turn": 2,  # right for jga only
         "state": {"hotel": {"area": "center", "price range": "cheap"}}},
        {"dialogue_id": "d1", "turn": 4, "state": {"hotel": {"area": "centre", "pricerange": "Cheap",
                                                             "bookpeople": "two"}}},  # jga only
        *REFS[3:],
    ]
    r = run(tmp_path, preds)
    assert r["jga"] == 1.0 and r["jga_exact"] == pytest.approx(3 / 5)


def test_fuzzy_threshold_boundary(tmp_path):
    onto = tmp_path / "o.json"
    onto.write_text(json.dumps({"shop": {"item": ["abcdefghij"]}}))
    refs = [{"dialogue_id": "x", "turn": 0, "state": {"shop": {"item": "abcdefghij"}}}]
    pred = [{"dialogue_id": "x", "turn": 0, "state": {"shop": {"item": "abcdefghji"}}}]  # ratio exactly 90.0
    assert run(tmp_path, pred, refs, ontology=str(onto), fuzzy_threshold=90)["jga"] == 1.0  # >= : snapped
    # just above: kept as predicted, so wrong
    assert run(tmp_path, pred, refs, ontology=str(onto), fuzzy_threshold=90.01)["jga"] == 0.0
    assert run(tmp_path, pred, refs, ontology="none")["jga"] == 0.0  # no ontology, no fuzzy matching
    with pytest.raises(ValueError, match="0–100"):
        run(tmp_path, pred, refs, ontology=str(onto), fuzzy_threshold=0.9)  # the reference evaluation's 0–1 threshold


def test_matcher_keeps_values_below_threshold_and_never_fuzzes_times():
    m = O.Matcher(O.multiwoz())
    assert m.value("restaurant", "name", "pizza hut fenditton") == "pizza hut fen ditton"  # 97 >= 90
    assert m.value("restaurant", "name", "pizza place") == "pizza place"  # best is far below: kept
    assert m.value("train", "leaveat", "17:14") == "17:14"
    assert m.value("hotel", "people", "22") == "22"


def test_unknown_slot_names(tmp_path):
    refs = REFS[:2]
    mapped = [REFS[0], {"dialogue_id": "d1", "turn": 2,
                        "state": {"hotle": {"area": "centre", "price_rnge": "cheap"}}}]
    r = run(tmp_path, mapped, refs)
    assert r["jga"] == 1.0 and r["unknown_slot_predictions"] == 0  # "hotle" 80, "pricernge" 95 >= thresholds
    unknown = [REFS[0], {"dialogue_id": "d1", "turn": 2,
                         "state": {"hotel": {"area": "centre", "pricerange": "cheap", "colour": "red"}}}]
    r = run(tmp_path, unknown, refs)
    assert r["jga"] == pytest.approx(1 / 2) and r["unknown_slot_predictions"] == 1
    assert r["examples"]["unknown_slots"] == ["hotel-colour"] and r["slot_precision"] == pytest.approx(3 / 4)
    strict = run(tmp_path, mapped, refs, slot_threshold=96)
    assert strict["jga"] == pytest.approx(1 / 2) and strict["unknown_slot_predictions"] == 2  # "hotle": both


def test_several_gold_values_and_dontcare_policy(tmp_path):
    refs = [{"dialogue_id": "a", "turn": 0,
             "state": {"hotel": {"name": ["acorn guest house", "bridge guest house"], "area": "dontcare"}}},
            {"dialogue_id": "a", "turn": 2,
             "state": {"hotel": {"name": "acorn guest house|bridge guest house"}}}]
    preds = [{"dialogue_id": "a", "turn": 0,
              "state": {"hotel": {"name": "bridge guesthouse", "area": "don't care"}}},
             {"dialogue_id": "a", "turn": 2, "state": {"hotel": {"name": "acorn guesthouse"}}}]
    assert run(tmp_path, preds, refs)["jga"] == 1.0
    no_dc = [{"dialogue_id": "a", "turn": 0, "state": {"hotel": {"name": "bridge guesthouse"}}}, preds[1]]
    assert run(tmp_path, no_dc, refs)["jga"] == pytest.approx(1 / 2)
    assert run(tmp_path, no_dc, refs, policy=Policy(dontcare="drop"))["jga"] == 1.0


def test_state_layouts_and_formats(tmp_path):
    """MultiWOZ 2.1 semi/book, flat "domain-slot" keys, MultiWOZ_Evaluation JSON, ordinal turns."""
    preds = [{"dialogue_id": "D1.json", "turn": 0, "state": {"hotel-area": "centre"}},
             {"dialogue_id": "d1", "turn": 2,
              "state": {"hotel": {"semi": {"area": "centre", "pricerange": "cheap"},
                                  "book": {"booked": [], "people": ""}}}}]
    assert run(tmp_path, preds, REFS[:2])["jga"] == 1.0
    mwz_eval = tmp_path / "e.json"
    mwz_eval.write_text(json.dumps({
        "d1": [{"state": r["state"]} for r in REFS[:3]],
        "d2": [{"state": r["state"], "active_domains": ["train"]} for r in REFS[3:4]]}))
    r = score_files(mwz_eval, write(tmp_path / "r.jsonl", REFS), ontology="multiwoz")
    assert r["jga"] == pytest.approx(4 / 5) and r["missing_turns"] == 1
    with pytest.raises(DataError, match="turn-index ordinal"):
        score_files(write(tmp_path / "p.jsonl", REFS), mwz_eval)  # index-keyed predictions vs ordinal refs
    ordinal = [dict(r, turn=r["turn"] // 2) for r in REFS]
    r = score_files(write(tmp_path / "p.jsonl", ordinal), mwz_eval, turn_index="ordinal")
    assert r["extra_turns"] == 1


def test_per_domain_uses_active_domains_when_given(tmp_path):
    refs = [dict(REFS[0], active_domains=["hotel", "taxi"]), dict(REFS[1], active_domains=["hotel"])]
    preds = [REFS[0], {"dialogue_id": "d1", "turn": 2, "state": {"hotel": {"area": "centre"}}}]
    r = run(tmp_path, preds, refs)
    assert r["per_domain"] == {"hotel": 0.5, "taxi": 1.0} and r["per_domain_turns"] == {"hotel": 2, "taxi": 1}


def test_wer_and_entity_wer(tmp_path):
    refs = [{"dialogue_id": "w", "turn": 0, "transcript": "i need a cheap hotel in the north",
             "state": {"hotel": {"pricerange": "cheap", "area": "north"}}},
            {"dialogue_id": "w", "turn": 2, "transcript": "i want to leave from cambridge",
             "state": {"train": {"departure": "cambridge"}}},
            {"dialogue_id": "w", "turn": 4, "transcript": "book pizza hut city centre",
             "state": {"restaurant": {"name": "pizza hut city centre"}}}]
    hyps = ["i need a cheap hotel in the nord",  # 1 substitution, on an entity word
            "i want leave from cambridge please",  # 1 deletion + 1 insertion, none on entity words
            "book pizza the hut city centre"]  # 1 insertion inside an entity span
    preds = [dict(r, transcript=h) for r, h in zip(refs, hyps)]
    r = run(tmp_path, preds, refs)
    assert r["wer"] == pytest.approx(4 / 19) and r["wer_turns"] == 3
    assert r["entity_words"] == 7 and r["entity_wer"] == pytest.approx(2 / 7)  # cheap north cambridge + 4
    no_transcripts = [{k: v for k, v in p.items() if k != "transcript"} for p in preds]
    assert "wer" not in run(tmp_path, no_transcripts, refs)


def test_bootstrap_ci_brackets_jga_and_is_seeded(tmp_path):
    refs = [{"dialogue_id": f"d{i}", "turn": t, "state": {"hotel": {"area": "north"}}}
            for i in range(40) for t in (0, 2)]
    preds = [p if (i % 3) else dict(p, state={}) for i, p in enumerate(refs)]
    a = run(tmp_path, preds, refs, bootstrap=500, seed=1)
    b = run(tmp_path, preds, refs, bootstrap=500, seed=1)
    assert a["jga_ci"] == b["jga_ci"] and a["jga_ci"][0] < a["jga"] < a["jga_ci"][1]


def test_auto_ontology_and_leakage_option(data_dir):
    assert O.guess({"hotel", "train"}) == "multiwoz" and O.guess({"restaurants_1"}) == "sgd"
    assert O.guess({"hotel", "profile"}) == "spokenwoz" and O.guess({"shop"}) == "none"
    clean = O.multiwoz(data_dir, exclude_test_values=True)
    leaky = O.multiwoz(data_dir, exclude_test_values=False)
    assert "corsica" not in clean.values["restaurant"]["food"]
    assert "corsica" in leaky.values["restaurant"]["food"]
    assert clean.describe()["test_values_excluded"] and not leaky.describe()["test_values_excluded"]
    assert O.Matcher(leaky).value("restaurant", "food", "corsican") == "corsica"  # snapped onto a test value
    assert O.Matcher(clean).value("restaurant", "food", "corsican") == "corsican"
    sgd = O.sgd(data_dir)
    assert sgd.values["restaurants_1"]["partysize"][:2] == ["1", "2"] and "profile" in O.spokenwoz().values


def test_prefetch_batches_like_extract_one():
    """Batched fuzzy matching (process.cdist) must pick what extractOne picks, ties included."""
    from rapidfuzz import fuzz, process

    onto = O.Ontology("t", {"shop": {"item": ["abcd", "abce", "abcf", "xbcd", "zzzz", "abcdefgh"]}})
    queries = ["abcx", "abxd", "abcdefgx", "qqqq", "abc", "bcd", "abcdefg", "zzz"]
    for threshold in (0, 50, 75, 90):
        m = O.Matcher(onto, threshold=threshold)
        m.prefetch([("shop", "item", q) for q in queries])
        for q in queries:
            choices = m.choices[("shop", "item")][0]
            hit = process.extractOne(q, choices, scorer=fuzz.ratio, score_cutoff=threshold)
            assert m.value("shop", "item", q) == (hit[0] if hit else q), (threshold, q)


def _turn_by_turn(refs, preds, onto):
    """The definitions, written the slow obvious way: per turn, dictionaries of accepted values."""
    from spokentod.dst.data import normalize as N
    from spokentod.dst.score.matching import UNKNOWN

    m = O.Matcher(onto)
    for d in refs:
        for t in d:
            for dr, sr, _ in t.items:
                dom = N.canonical_domain(dr)
                m.add_slot(dom, N.canonical_slot(dom, sr))

    def view(items, gold):
        norm, exact = {}, {}
        for dr, sr, v in items:
            dom = N.canonical_domain(dr)
            ek = (dom, N.canonical_slot(dom, sr))
            k = ek if gold else m.slot(dr, sr)
            alts = N.alternatives(v)
            if k is None:
                k, nv = (UNKNOWN, f"{dr}-{sr}"), {N.basic(a) for a in alts} - {""}
            else:
                nv = {m.value(k[0], k[1], a) for a in alts} - {None}
            ev = {N.exact_value(a) for a in alts} - {None}
            if nv:
                norm.setdefault(k, nv)
            if ev:
                exact.setdefault(ek, ev)
        return norm, exact

    def right(p, g):
        ok = sum(1 for k, v in p.items() if k in g and v <= g[k])
        return ok, ok == len(p) == len(g)

    n = jga = jx = tp = npred = ngold = ktp = 0
    dom_n, dom_ok = {}, {}
    for d in refs:
        for t in d:
            n += 1
            g, gx = view(t.items, True)
            active = t.active_domains if t.active_domains is not None else {k[0] for k in g}
            for dom in set(active):
                dom_n[dom] = dom_n.get(dom, 0) + 1
            pr = preds.turns.get((t.dialogue_id, t.index))
            ngold += len(g)
            if pr is None:
                continue
            p, px = view(pr.items, False)
            ok, whole = right(p, g)
            tp, npred, ktp = tp + ok, npred + len(p), ktp + len(p.keys() & g.keys())
            jga += whole
            jx += right(px, gx)[1]
            for dom in set(active):
                pd = {k: v for k, v in p.items() if k[0] == dom}
                gd = {k: v for k, v in g.items() if k[0] == dom}
                dom_ok[dom] = dom_ok.get(dom, 0) + right(pd, gd)[1]
    return {"jga": jga / n, "jga_exact": jx / n, "slot_precision": tp / npred, "slot_recall": tp / ngold,
            "slot_key_precision": ktp / npred,
            "per_domain": {d: dom_ok.get(d, 0) / c for d, c in dom_n.items()}}


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("seed", [7, 8, 9])
def test_vectorized_scores_equal_a_turn_by_turn_definition(seed, dense, monkeypatch):
    """Random states with every awkward case (several gold values, list predictions, two names for one slot,
    empties, dontcare, unknown slots and domains, listed active domains, missing and extra turns, predicted
    items equal to reference ones), with the direct-address tables and with the sorting fallback."""
    from spokentod.dst.score import matching

    if not dense:
        monkeypatch.setattr(matching, "_DENSE", 0)
    rng = random.Random(seed)
    names = {"hotel": ["area", "pricerange", "price range", "book people", "name", "colour"],
             "hotle": ["area"], "train": ["leaveAt", "leave at", "day", "departure"], "taxi": ["destination"]}
    values = ["centre", "center", " CENTRE", "north", "dontcare", "none", "", "not mentioned", "cheap",
              "2", "two", "17:15", "5:15 pm", "acorn guest house", "acorn guesthouse", "acron guesthouse",
              "monday", "mondya"]

    def state(domains):
        items = []
        for _ in range(rng.randint(0, 6)):
            d = rng.choice(domains)
            n_alts = rng.randint(1, 3)
            v = rng.choice(values) if rng.random() < 0.8 else [rng.choice(values) for _ in range(n_alts)]
            items.append((d, rng.choice(names[d]), tuple(v) if isinstance(v, list) else v))
        return tuple(items)

    refs, preds = [], {}
    for i in range(60):
        dlg = []
        for k in range(rng.randint(1, 5)):
            listed = tuple(rng.sample(["hotel", "train", "taxi"], rng.randint(0, 2)))
            act = None if rng.random() < 0.7 else listed
            dlg.append(TurnState(f"d{i}", k, 2 * k, state(["hotel", "train", "taxi"]), None, act))
            if rng.random() < 0.85:
                gold_like = rng.random() < 0.3
                items = dlg[-1].items if gold_like else state(["hotel", "hotle", "train", "taxi"])
                preds[(f"d{i}", 2 * k)] = TurnState(f"d{i}", k, 2 * k, items)
        refs.append(dlg)
    preds[("d0", 99)] = TurnState("d0", 99, 99, ())
    for onto in (None, O.multiwoz()):
        fast = score(refs, Predictions(preds, "index"), O.Matcher(onto))
        slow = _turn_by_turn(refs, Predictions(preds, "index"), onto)
        for k in ("jga", "jga_exact", "slot_precision", "slot_recall", "slot_key_precision"):
            assert fast[k] == pytest.approx(slow[k], abs=1e-12), k
        assert fast["per_domain"] == pytest.approx({d: v for d, v in slow["per_domain"].items()}, abs=1e-12)
        assert 0 < fast["jga"] < 1 and fast["extra_turns"] == 1


def test_duplicate_reference_turns_are_an_error_and_duplicate_predictions_are_counted(tmp_path):
    with pytest.raises(DataError, match="given twice"):
        run(tmp_path, REFS, REFS + REFS[:1])
    r = run(tmp_path, [REFS[0], dict(REFS[0], state={}), *REFS[1:]])
    assert r["duplicate_records"] == 1 and r["jga"] == 1.0  # the first record of a turn counts
