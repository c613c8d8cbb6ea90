"""Which LLM the agent uses: from the environment, never from code.

* ``IPA_AGENT_MODEL``: a pydantic-ai model name, ``<provider>:<model>`` (``openai:gpt-4.1``,
  ``anthropic:claude-sonnet-4-5``, ``google-gla:gemini-2.5-pro``, ...). The provider's SDK must be
  installed: this project ships OpenAI's (``pydantic-ai-slim[openai]``); others are one extra away
  (``pip install "pydantic-ai-slim[anthropic]"``). API keys come from the provider's own variable
  (``OPENAI_API_KEY``, ...).
* ``IPA_AGENT_BASE_URL``: a local or self-hosted OpenAI-compatible server (vLLM, llama.cpp, Ollama's
  ``/v1``); then ``IPA_AGENT_MODEL`` is the model's name on that server, and ``IPA_AGENT_API_KEY`` its key
  if it wants one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic_ai.models import Model

MODEL_VARIABLE = "IPA_AGENT_MODEL"
BASE_URL_VARIABLE = "IPA_AGENT_BASE_URL"
API_KEY_VARIABLE = "IPA_AGENT_API_KEY"
HOW_TO = (
    f"set {MODEL_VARIABLE} to a pydantic-ai model (e.g. openai:gpt-4.1, with OPENAI_API_KEY), or "
    f"{BASE_URL_VARIABLE} to an OpenAI-compatible server (e.g. http://127.0.0.1:11434/v1) and "
    f"{MODEL_VARIABLE} to its model's name; docs/agent.md"
)


class AgentNotConfigured(RuntimeError):
    """No model is configured, or the configured one cannot be used; the message says what to set."""


@dataclass(frozen=True)
class ModelConfig:
    model: str
    base_url: str = ""
    api_key: str = ""

    def describe(self) -> str:
        return f"{self.model} at {self.base_url}" if self.base_url else self.model


def model_config(environ: Mapping[str, str] = os.environ) -> ModelConfig:
    """The configured model; :class:`AgentNotConfigured` naming what to set when there is none."""
    model = environ.get(MODEL_VARIABLE, "").strip()
    base_url = environ.get(BASE_URL_VARIABLE, "").strip()
    if not model:
        raise AgentNotConfigured(f"no agent model is configured: {HOW_TO}")
    return ModelConfig(model, base_url, environ.get(API_KEY_VARIABLE, "").strip())


def build_model(config: ModelConfig) -> Model:
    """The pydantic-ai model for ``config``; :class:`AgentNotConfigured` with pydantic-ai's reason (a
    missing SDK or API key, an unknown name)."""
    from pydantic_ai.exceptions import UserError

    try:
        if config.base_url:
            from pydantic_ai.models.openai import OpenAIChatModel
            from pydantic_ai.providers.openai import OpenAIProvider

            provider = OpenAIProvider(base_url=config.base_url, api_key=config.api_key or "not-needed")
            return OpenAIChatModel(config.model, provider=provider)
        from pydantic_ai.models import infer_model

        return infer_model(config.model)
    except (UserError, ImportError, ValueError) as exc:
        raise AgentNotConfigured(f"agent model {config.describe()!r} cannot be used: {exc}") from None
