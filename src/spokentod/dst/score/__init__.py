"""DST scoring: JGA (exact and normalized + fuzzy), slot P/R/F1, slot-key F1, per-domain
JGA, bootstrap CI, WER and entity WER.

Inputs (predictions or references; the format is detected from the content):
  JSONL    one record per user turn: {"dialogue_id", "turn", "state": {domain: {slot: value}},
           "transcript"?, "active_domains"?}. ``turn`` is the schema's Turn.index (position in the
           dialogue counting both speakers: MultiWOZ user turns are 0, 2, 4 ...) or, with
           ``turn_index="ordinal"``, the 0-based count of user turns.
  MultiWOZ_Evaluation JSON  {dialogue_id: [{"state": ..., "active_domains"?: [...]}, ...]}, one entry
           per user turn in order (so always ordinal).
  Dialogues from a corpus loader (``references_from_dialogues``): user turns that carry a state.
A state may also be MultiWOZ 2.1's {domain: {"semi": {...}, "book": {...}}} or flat {"hotel-area": v}.
Dialogue ids are compared lower-cased without a ".json" suffix (MultiWOZ_Evaluation writes "mul0484").

Definitions (every count is over reference user turns):
  jga           a turn is right when, after normalization (normalize.py) and fuzzy matching (ontology.py),
                the predicted slots are exactly the reference slots and each value is an accepted one.
  jga_exact     the same with values only lower-cased and trimmed (slot names still canonical).
  slot_*        micro-averaged over all turns: a predicted slot is a true positive when the reference has
                that slot with an accepted value; slot_key_* ignores values.
  per_domain    JGA over the turns where the domain is active in the reference: its ``active_domains``
                when given, else the domains present in the reference state; only that domain's slots count.
  missing turns (no valid prediction, malformed ones included) are wrong and all their reference slots are
                false negatives; extra turns (predictions for turns the references lack) are reported and
                otherwise ignored; predicted slot names that map to no schema slot are wrong.
  jga_ci        percentile bootstrap over dialogues (turns of one dialogue are not independent).
  wer           corpus WER of predicted transcripts against reference user utterances, normalized with
                spokentod.metrics.text.normalize_for_wer; computed when any prediction has a transcript,
                a turn without one counting as an empty hypothesis.
  entity_wer    the same alignment, errors counted only on reference words inside a span that spells a
                reference state value (deletions and substitutions of those words, insertions inside a span);
                yes/no slots (parking, internet) and dontcare are not entities.

Modules: states (reading predictions and references in every accepted format), matching (both sides as
integer arrays, compared in numpy), wer (WER and entity WER), scorer (score and score_files: the numbers).
"""
