"""Model backends behind small protocols (see base.py)."""
