"""DST training: the recipe (recipe: YAML → pydantic), what feeds a step (batches: seeded streams, data
sets, features) and the two-phase loop with checkpoints, validation and early stopping (loop)."""
