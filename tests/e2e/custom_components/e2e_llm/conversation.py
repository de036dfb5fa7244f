"""The agent: streams the user's text back as its answer, three characters per delta."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import MATCH_ALL
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

TOKEN_CHARACTERS = 3


async def async_setup_entry(
    hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    async_add_entities([EchoingLlm(entry)])


class EchoingLlm(conversation.ConversationEntity):
    _attr_supports_streaming = True
    _attr_name = "E2E streaming LLM"

    def __init__(self, entry: ConfigEntry) -> None:
        self._attr_unique_id = entry.entry_id

    @property
    def supported_languages(self) -> list[str] | Literal["*"]:
        return MATCH_ALL

    async def _async_handle_message(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult:
        async def deltas() -> AsyncIterator[dict[str, Any]]:
            yield {"role": "assistant"}
            text = user_input.text
            for start in range(0, len(text), TOKEN_CHARACTERS):
                yield {"content": text[start : start + TOKEN_CHARACTERS]}
                await asyncio.sleep(0.005)  # tokens arrive one by one

        async for _content in chat_log.async_add_delta_content_stream(self.entity_id, deltas()):
            pass
        return conversation.async_get_result_from_chat_log(user_input, chat_log)
