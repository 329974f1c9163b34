"""Cloud settings (TOML + `FEDRANK_*` env): the tasks, the global energy budget and tri-feedback."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from cloud_agent.tri_feedback import TriFeedbackConfig
from fedrank.settings import AgentSettings

TaskId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class CloudSettings(AgentSettings):
    ROLE: ClassVar[str] = "cloud"

    tasks: list[TaskId] = Field(min_length=1, description="tasks whose energy the cloud allocates",
                                examples=[["sst2", "conll", "copa"]])
    e_total_j: float = Field(gt=0, description="E_total: the global energy budget of one window of Q rounds, joules",
                             examples=[30000.0])
    feedback: TriFeedbackConfig = Field(
        default_factory=TriFeedbackConfig, description="tri-feedback parameters, Q included (docs/algorithms.md §5)"
    )
    tri_feedback: bool = Field(True, description="False = fixed equal budgets every window (the ablation)")

    @field_validator("tasks")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"task names must be unique, got {v}")
        return v
