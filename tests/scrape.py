"""Read a Prometheus text exposition into samples that tests can query exactly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            Sample(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def value(self, name: str, **labels: str) -> float:
        """The one sample named ``name`` with exactly these labels."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0]

    def nonzero(self, name: str, *label_names: str, **match: str) -> dict[tuple[str, ...], float]:
        """Every non-zero sample of ``name`` whose labels include ``match``, keyed by the
        values of ``label_names``."""
        return {
            tuple(s.labels[n] for n in label_names): s.value
            for s in self.samples
            if s.name == name and s.value != 0 and match.items() <= s.labels.items()
        }

    def names(self) -> set[str]:
        return {s.name for s in self.samples}
