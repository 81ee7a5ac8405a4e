"""The DST model: its configuration (config, no torch), the speech encoders (encoders), where speech
features come from (features: the on-disk cache of a frozen encoder, or the encoder itself), and the
network (speechdst: connector, text encoder, LLM with LoRA)."""
