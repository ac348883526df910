"""Clients of a test module's `emulator` fixture, shared by the emulator and provider tests.

A module takes them by assignment (`admin = fixtures.admin`) and defines `emulator` itself,
with the configuration its tests need.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import openai
import pytest

from backburner.emulator import EmulatorAdmin
from backburner.emulator.testing import RunningEmulator
from tests.emulator_support.sdk import anthropic_client, openai_client


@pytest.fixture
async def admin(emulator: RunningEmulator) -> AsyncIterator[EmulatorAdmin]:
    async with EmulatorAdmin(emulator.base_url) as client:
        yield client


@pytest.fixture
async def claude(emulator: RunningEmulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic_client(emulator) as client:
        yield client


@pytest.fixture
async def gpt(emulator: RunningEmulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai_client(emulator) as client:
        yield client
