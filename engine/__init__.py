"""Bourse core trade engine: deterministic matching fed by a sequenced, journaled command log."""
