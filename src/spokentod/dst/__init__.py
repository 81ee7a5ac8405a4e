"""End-to-end spoken dialogue state tracking, as sub-packages along the pipeline:

    data     dialogues → one Example per user turn (history, transcript, state, audio), ASR items for phase 1,
             the domain split, and the schema knowledge scoring and prompting share (ontology, normalization)
    model    speech encoder → connector → causal LLM with LoRA, plus a text encoder; the encoder feature cache
    train    the recipe (YAML → pydantic) and the two-phase training loop
    infer    tracking dialogues turn by turn (a trained model, or a prompted LLM / AudioLM), reading the
             tracker's JSON output, writing predictions
    score    JGA, slot P/R/F1, per-domain JGA, bootstrap CI, WER and entity WER
    cli      ``spokentod dst train|track|score|repro``

The recipe follows a published speech-aware DST system (the reference recipe: "Joint Speech and Text
Training for LLM-based End-to-End Spoken DST"): a WavLM or Whisper encoder, a connector of two strided
convolutions and a Transformer, Gemma-3-1B with LoRA, trained first on ASR (phase 1) and then on the sum of
DST losses from speech, from unpaired text through a text encoder, and from the speech batch's transcripts
(phase 2). Where this package differs from the reference implementation, the module that does it says
what it did and why. Studies built on this package (the reproduction) live in spokentod.studies.
"""
