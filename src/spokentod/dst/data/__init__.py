"""DST data: examples from dialogues (examples), phase-1 ASR items (asr_items), the source/target domain
split (domains), and the schema knowledge scoring and prompting share: value normalization (normalize) and
the ontologies values are matched to (ontology, with the tables it ships in resources/)."""
