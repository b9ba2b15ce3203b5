"""Measure models and render before/after pruning reports (see ``metrics`` and ``table``)."""
