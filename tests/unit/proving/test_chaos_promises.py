"""Each fault's promise, checked over the answers sent during it (`ChaosRun.broken_promises`)."""

from __future__ import annotations

import time
from pathlib import Path

from proving.chaos import NODE_LOSS_PROMISE, REFUSED, Answer, ChaosRun, FaultResult, Promise, Target, Upgrade
from ufme_ray.config import UfmeSettings


def run_with(promise: Promise, answers: list[tuple[str, str]], recovery_s: float | None = 5.0) -> ChaosRun:
    target = Target(url="http://127.0.0.1:9", api_key="k", dashboard_url="http://127.0.0.1:9", ray_token=None,
                    settings=UfmeSettings(), embedding_dim=128)
    run = ChaosRun(target, [], rate=1.0)
    run.answers = [Answer(operation, "fault", status, 0.0, 0.1) for operation, status in answers]
    run.results = [FaultResult("fault", 0.0, 1.0, recovery_s, {}, promise)]
    return run


def test_an_upgrade_allows_a_503_or_a_refusal_and_no_failed_read():
    assert run_with(Upgrade.promise, [("enrol", "201"), ("enrol", "503"), ("delete", "404"), ("identify", "200")]).broken_promises() == []
    assert run_with(Upgrade.promise, [("enrol", "500")]).broken_promises() == ["fault: a write (enrol) failed with 500"]
    assert run_with(Upgrade.promise, [("enrol", "timeout")]).broken_promises() == ["fault: a write (enrol) failed with timeout"]
    assert run_with(Upgrade.promise, [("identify", "503")]).broken_promises() == ["fault: a read (identify) failed with 503"]


def test_a_node_loss_allows_an_unreachable_service_but_no_other_5xx_and_bounds_recovery():
    quiet = [("enrol", REFUSED), ("enrol", "timeout"), ("delete", "503"), ("identify", "503")]
    assert run_with(NODE_LOSS_PROMISE, quiet).broken_promises() == []
    assert run_with(NODE_LOSS_PROMISE, [("gallery", "502")]).broken_promises() == ["fault: a write (gallery) failed with 502"]
    assert run_with(NODE_LOSS_PROMISE, [], recovery_s=61.0).broken_promises() == [
        "fault: the service answered correctly again only after 61.0 s"
    ]


def test_a_fault_without_a_promise_is_checked_by_the_ledger_alone():
    assert run_with(Promise(), [("enrol", "500"), ("identify", "500")], recovery_s=600.0).broken_promises() == []


def test_the_warm_up_lasts_until_enough_subjects_are_decided():
    """On a slow machine the warm-up's seconds may decide too few subjects for the final check to
    mean anything; `warmup_subjects` waits for them before the first fault."""

    def slow_run(warmup_subjects: int) -> ChaosRun:
        target = Target(url="http://127.0.0.1:9", api_key="k", dashboard_url="http://127.0.0.1:9", ray_token=None,
                        settings=UfmeSettings(), embedding_dim=128)
        run = ChaosRun(target, [Path(f"{i}.jpg") for i in range(50)], rate=10.0, workers=1, mix={"enrol": 1.0})

        def enrol():  # a service that acknowledges one enrolment every 0.1 s
            time.sleep(0.1)
            subject = run.ledger.new_subject(run.phase)
            run.ledger.enrolled(subject, run.phase)
            return subject

        run.enrol = enrol
        run.run([], warmup_s=0.05, settle_s=0, warmup_subjects=warmup_subjects, warmup_timeout_s=30)
        return run

    assert len(slow_run(8).ledger.snapshot()[0]) >= 8
    assert len(slow_run(0).ledger.snapshot()[0]) < 8


def test_the_final_check_counts_every_kind_even_when_none_of_it_is_left():
    """A node-loss round in the full suite ended with all 23 subjects it had enrolled erased again;
    the count of acknowledged subjects checked must then read 0, not be missing."""
    assert run_with(Promise(), []).verify() == {"acknowledged": 0, "erased": 0, "galleries": 0}
