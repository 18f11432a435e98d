"""A configured source or destination together with its compiled mapping."""

from __future__ import annotations

from dataclasses import dataclass

from hub.config import DestinationConfig, SourceConfig
from hub.mapping import InboundMapping, OutboundMapping


@dataclass(frozen=True)
class SourceRuntime:
    config: SourceConfig
    mapping: InboundMapping

    @property
    def channel(self) -> str:
        return self.config.kind


@dataclass(frozen=True)
class DestinationRuntime:
    config: DestinationConfig
    mapping: OutboundMapping
