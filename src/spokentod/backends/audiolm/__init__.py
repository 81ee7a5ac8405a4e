"""audiolm backends; each module registers itself with backends.base.register."""
