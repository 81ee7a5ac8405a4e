"""spokentod: spoken task-oriented dialogue toolkit (bench + dst)."""

__version__ = "0.1.0"
