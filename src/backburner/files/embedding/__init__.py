"""Embedders, their cache, and the strategy that turns chunk texts into stored vectors."""
