"""DST inference: the model tracker's turn-by-turn loop and the ASR first stage of a cascade (track), the
prompted LLM / AudioLM tracker (prompted), reading the tracker's JSON output (parse), and the writers of
predictions (predictions). A whole ``dst track`` run is put together in dst/cli/tracking.py."""
