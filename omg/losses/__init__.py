"""Matching and losses (docs/model.md §9)."""
