"""Which model the agent uses comes from the environment; without one, the agent says what to set."""

from __future__ import annotations

import pytest

from ipa_tasks.agent.model_config import AgentNotConfigured, build_model, model_config


def test_nothing_configured_says_what_to_set() -> None:
    with pytest.raises(AgentNotConfigured, match="no agent model is configured: set IPA_AGENT_MODEL"):
        model_config({})


def test_a_local_openai_compatible_server_is_reached_by_its_base_url() -> None:
    config = model_config(
        {"IPA_AGENT_MODEL": "qwen2.5:7b", "IPA_AGENT_BASE_URL": "http://127.0.0.1:11434/v1"}
    )
    model = build_model(config)
    assert model.model_name == "qwen2.5:7b" and model.system == "openai"
    assert str(model.client.base_url).startswith("http://127.0.0.1:11434/v1")


def test_a_provider_without_its_sdk_or_key_is_refused_with_pydantic_ais_reason(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(AgentNotConfigured, match="pydantic-ai-slim\\[anthropic\\]"):
        build_model(model_config({"IPA_AGENT_MODEL": "anthropic:claude-sonnet-4-5"}))
    with pytest.raises(AgentNotConfigured, match="OPENAI_API_KEY"):
        build_model(model_config({"IPA_AGENT_MODEL": "openai:gpt-4.1"}))
    with pytest.raises(AgentNotConfigured, match="Unknown model: nonsense"):
        build_model(model_config({"IPA_AGENT_MODEL": "nonsense"}))
