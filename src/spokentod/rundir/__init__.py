"""The run directory: what `bench run` writes and `bench score` / `bench report` read.

    run.json                     RunMeta: config, versions, git commit, backend identities + prompt hashes,
                                 host, sessions (start/end/status), counts. No secrets.
    plan.json                    Plan: systems, seeds, dialogue ids and their user turns (for status/merge)
    results/<system>.jsonl       one ResultRecord per (dialogue, user turn, seed) attempt
    audio_in/                    user (and agent) turn audio rendered once for the systems to hear
    audio_out/<system>/<dialogue>/<turn:03d>.wav   reply audio
    metrics/<system>.jsonl       one MetricRecord per final reply (written by `bench score`)
    metrics/summary.json         per system and metric: mean, sd, p50, p90, n, missing
    metrics/cache.sqlite         the scorer's cache of backend calls and metric results

A shard i of n names its files run.shard-i-of-n.json, plan.shard-i-of-n.json, <system>.shard-i-of-n.jsonl.

This package is the bottom of the evaluation stack: `bench` produces run directories, `metrics` measures
them, `analysis` summarises them, and each of those imports this package, never one another.

Modules: layout (file names), records (the typed records), store (durable JSONL appends and reads),
scan (a directory's files and per-system status), merge (joining shards).
"""
