"""Scripted models for the agent's tests (pydantic-ai's FunctionModel): each plays one engineer's session
step by step, and records what the tools answered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

Step = Callable[[dict[str, Any]], ModelResponse]
"""Given the tool answers so far (name -> content of the latest), the model's next response."""


@dataclass
class Script:
    steps: list[Step]
    answers: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tools_offered: list[str] = field(default_factory=list)

    def model(self) -> FunctionModel:
        position = 0

        def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            nonlocal position
            self.tools_offered = [t.name for t in info.function_tools]
            for part in messages[-1].parts:
                # A refused call (an unknown tool, bad arguments) comes back as a retry prompt.
                if isinstance(part, ToolReturnPart | RetryPromptPart) and part.tool_name:
                    self.answers[part.tool_name] = part.content
            response = self.steps[min(position, len(self.steps) - 1)](self.answers)
            position += 1
            for part in response.parts:
                if isinstance(part, ToolCallPart):
                    self.calls.append((part.tool_name, part.args_as_dict()))
            return response

        return FunctionModel(respond)


def call(tool: str, **args: Any) -> Step:
    return lambda answers: ModelResponse(parts=[ToolCallPart(tool, args)])


def propose(stages: Callable[[dict[str, Any]], list[dict[str, Any]]], rationale: str = "scripted") -> Step:
    return lambda answers: ModelResponse(
        parts=[ToolCallPart("final_result", {"stages": stages(answers), "rationale": rationale})]
    )


def say(text: Callable[[dict[str, Any]], str]) -> Step:
    return lambda answers: ModelResponse(parts=[TextPart(text(answers))])


def stages_of(summary: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("stage", "variant", "batch_size", "cores", "replicas")
    return [{k: s[k] for k in keys} for s in summary["stages"]]
