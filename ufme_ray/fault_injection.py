"""The testing switch that fault-injection settings need (`testing.fault_injection`).

A setting that makes the compaction job SIGKILL itself or stall while holding the lock must not be
one typo away in production: settings validation refuses it unless this switch is on.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SWITCH = "testing.fault_injection"


class TestingSettings(BaseModel):
    """Switches for the test suites and the proving harness only; all off by default."""

    __test__ = False  # not a pytest test class, whatever its name
    model_config = ConfigDict(extra="forbid", frozen=True)

    fault_injection: bool = Field(
        False, description="Allow fault-injection settings (compaction.crash_at, compaction.delay_commit_s); "
        "UFME_TESTING__FAULT_INJECTION=1. Never on in production.",
    )


# The compaction settings that inject faults; off when falsy.
COMPACTION_FAULTS = ("crash_at", "delay_commit_s")


def refuse_unswitched_faults(compaction: object, testing: TestingSettings) -> None:
    """Raise ValueError naming each fault the compaction settings set while the testing switch is off."""
    named = [f"compaction.{name}" for name in COMPACTION_FAULTS if getattr(compaction, name)]
    if named and not testing.fault_injection:
        raise ValueError(
            f"fault injection ({', '.join(named)}) is refused unless {SWITCH} is true "
            f"(UFME_TESTING__FAULT_INJECTION=1); it is for tests only"
        )
