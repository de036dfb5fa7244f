"""One step, nothing to ask."""

from __future__ import annotations

from typing import Any

from homeassistant.config_entries import ConfigFlow, ConfigFlowResult


class E2ELlmFlow(ConfigFlow, domain="e2e_llm"):
    VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        return self.async_create_entry(title="E2E streaming LLM", data={})
