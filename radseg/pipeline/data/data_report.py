"""The outcome of check-data: one :class:`Problem` per file and issue, gathered in a :class:`DataReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


#: the warning of a label without foreground (see radseg.pipeline.train.run_checks for class-balanced sampling)
EMPTY_LABEL = "label is empty (background only)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file of one case."""

    severity: str  # "error" (unusable) or "warning" (usable, but look at it)
    case_id: str
    file: str  # relative to the dataset root where possible
    message: str
    fix: str = ""

    def line(self) -> str:
        """``ERROR case phantom_003 (labelsTr/phantom_003.nii.gz): ...; fix: ...``."""
        text = f"{self.severity.upper()} case {self.case_id} ({self.file}): {self.message}"
        return f"{text}; fix: {self.fix}" if self.fix else text


@dataclass
class DataReport:
    """The outcome of :func:`check_dataset`: every problem found, one per line."""

    root: Path
    num_cases: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when no problem is an error (warnings allowed)."""
        return not self.errors

    def background_only_cases(self) -> list[str]:
        """The cases whose label holds background only."""
        return sorted({p.case_id for p in self.problems if p.message == EMPTY_LABEL})

    def lines(self) -> list[str]:
        """One line per problem, errors first."""
        return [p.line() for p in self.errors + self.warnings]

    def summary(self) -> str:
        """``checked 6 cases: 0 errors, 1 warning``."""
        errors, warnings = len(self.errors), len(self.warnings)
        return (
            f"checked {self.num_cases} cases: {errors} error{'s' * (errors != 1)}, "
            f"{warnings} warning{'s' * (warnings != 1)}"
        )
