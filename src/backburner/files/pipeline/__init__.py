"""Turning a claimed file into passages: the worker, the parsers and the chunker."""
