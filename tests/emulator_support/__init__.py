"""Helpers for the emulator's own tests."""
