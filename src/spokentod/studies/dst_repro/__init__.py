"""The DST reproduction: does joint training with target-domain *text* lift target-domain JGA on spoken
dialogues? The reference recipe (Joint Speech and Text Training for LLM-based End-to-End Spoken DST:
speech encoder → conv + Transformer connector → Gemma-3-1B with LoRA, trained on speech and unpaired text
together) reported that it does; this study asks the same question at a scale a 2-core CPU can run, on
MultiWOZ 2.1 with TTS-rendered user turns. One config (configs/dst/repro_*.yaml), one command, five
resumable stages:

    spokentod dst repro configs/dst/repro_multiwoz.yaml [--out DIR] [--stage prepare|phase1|train|eval|report|all]
                        [--set key=value ...]

prepare  MultiWOZ 2.1 dialogues (the given files pooled) → split by domain (split_by_domain) into
         source-only, target-only and mixed dialogues (mixed ones are left out and counted) → seeded,
         dialogue-disjoint train/dev/test splits per side (test drawn first, then dev, then train, so growing
         the training set never changes the test set) → user turns rendered with the embedded TTS
         (synthesize_manifest: resumable): training speech in one voice set, dev/test speech in voices never
         used for training, the S+TTS copy of the target text in a third → frozen-encoder features computed
         once into the feature cache. Writes <out>/data/<set>/manifest.jsonl, references.jsonl,
         <out>/data/split.json.
phase1   ASR pre-training of the connector on the source training speech, once; every condition starts from
         <out>/shared/phase1/best (init_from).
train    Each condition × seed: the base recipe + the condition's losses, trained by train_phase
         (resumes from <run>/phase2/last; a finished run is skipped).
eval     Each run's best checkpoint tracks every test set (predicted history, batched across dialogues) and
         is scored by score_files (bootstrap CI over dialogues, per domain, WER, slot-key F1); the
         cascade's Whisper transcripts are made once per test set. Predictions already written (with a
         done-marker naming the checkpoint's hash) are not redone. Paired bootstrap of every condition
         against the baseline (per seed and seeds pooled) → <out>/results.json.
report   write_report → the markdown report with its plots.

Every stage appends its wall time to <out>/timings.json; <out>/repro.json holds the resolved config and
every command that ran on this out dir. A killed run continues where it stopped when the same command is
run again; a changed config that would make finished work stale is refused with the differing fields named.

Modules: config (the YAML and the training recipes it derives), layout (the out dir and its small JSON
files), prepare (the data stage), stages (training, evaluation and the driver), stats (scoring and paired
bootstraps → results.json), report and plots (reports/dst_repro.md and its figures).
"""
