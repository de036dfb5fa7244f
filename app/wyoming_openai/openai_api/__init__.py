"""The reverse direction: an OpenAI-compatible speech API in front of Wyoming servers.

``python -m wyoming_openai.openai_api`` or ``wyoming-openai serve-openai`` runs it; ``create_app``
builds the aiohttp application (for embedding and tests).
"""

from .app import create_app
from .config import ApiSettings

__all__ = ["ApiSettings", "create_app"]
