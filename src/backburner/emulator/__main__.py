"""``python -m backburner.emulator``: the same as ``backburner emulator``."""

from backburner.emulator.cli import emulator_cli

emulator_cli(prog_name="backburner emulator")
