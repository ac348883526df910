"""A local server speaking the Anthropic Message Batches and OpenAI Batch APIs, with fault injection.

The official SDKs work against it with only ``base_url`` and an API key set. See
:func:`create_emulator_app`, :func:`serve_emulator` and, for tests,
:func:`backburner.emulator.testing.running_emulator`.
"""

from backburner.emulator.admin_client import EmulatorAdmin
from backburner.emulator.app import create_emulator_app
from backburner.emulator.config import DEFAULT_HOST, DEFAULT_PORT, EmulatorConfig
from backburner.emulator.faults import ROUTE_NAMES, FaultKind, FaultRule, RouteName
from backburner.emulator.outcomes import Scenario
from backburner.emulator.server import run_emulator, serve_emulator

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ROUTE_NAMES",
    "EmulatorAdmin",
    "EmulatorConfig",
    "FaultKind",
    "FaultRule",
    "RouteName",
    "Scenario",
    "create_emulator_app",
    "run_emulator",
    "serve_emulator",
]
