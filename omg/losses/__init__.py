"""Matching and losses (model spec section 9)."""
