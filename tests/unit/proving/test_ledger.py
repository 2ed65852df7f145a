from pathlib import Path

from proving.ledger import Ledger

PHOTOS = [Path(f"/faces/p{i}.jpg") for i in range(3)]


def ledger() -> Ledger:
    return Ledger(list(PHOTOS), run_id="t", seed=1, in_flight_bound_s=100.0)


def test_live_subjects_never_share_a_photo_and_erased_photos_come_back():
    book = ledger()
    subjects = [book.new_subject("p") for _ in range(3)]
    assert len({s.photo for s in subjects}) == 3
    assert book.new_subject("p") is None  # every photo is in use
    book.enrolled(subjects[0], "p")
    chosen = book.subject_to_delete(now=5.0)
    assert chosen == subjects[0]
    assert book.deleted(chosen, "p", sent_at=9.0, answered_at=10.0)
    again = book.new_subject("p")
    assert again is not None and again.photo == subjects[0].photo and again.subject_id != subjects[0].subject_id


def test_an_erased_subject_counts_only_for_requests_sent_after_its_delete_was_answered():
    book = ledger()
    subject = book.new_subject("p")
    book.enrolled(subject, "p")
    assert book.deleted(book.subject_to_delete(now=5.0), "delete phase", sent_at=9.0, answered_at=10.0)
    assert book.erased_before([subject.subject_id, "other"], sent_at=9.0) == []
    [ghost] = book.erased_before([subject.subject_id], sent_at=11.0)
    assert ghost.subject_id == subject.subject_id and ghost.phase == "delete phase"


def test_ambiguous_subjects_are_deleted_first_once_their_write_cannot_be_in_flight():
    book = ledger()  # in_flight_bound_s 100
    live, unsure = book.new_subject("p"), book.new_subject("p")
    book.enrolled(live, "p")
    book.enrol_ambiguous(unsure, "outage", sent_at=1000.0)
    assert book.subject_to_identify() == live  # an ambiguous subject is never probed as "must be found"
    assert book.subject_to_delete(now=1050.0, ambiguous_only=True) is None  # its enrolment may still land
    chosen = book.subject_to_delete(now=1200.0)
    assert chosen.subject_id == unsure.subject_id
    acknowledged, erased, ambiguous = book.snapshot()
    assert [s.subject_id for s in acknowledged] == [live.subject_id]
    assert erased == [] and [s.subject_id for s in ambiguous] == [unsure.subject_id]


def test_a_delete_sent_while_the_unclear_enrolment_may_be_in_flight_settles_nothing():
    book = ledger()
    unsure = book.new_subject("p")
    book.enrol_ambiguous(unsure, "outage", sent_at=1000.0)
    assert not book.deleted(unsure, "p", sent_at=1050.0, answered_at=1051.0)  # the enrolment may land after it
    assert [s.subject_id for s in book.snapshot()[2]] == [unsure.subject_id]
    assert book.deleted(unsure, "p", sent_at=1101.0, answered_at=1102.0)
    assert [s.subject_id for s in book.snapshot()[1]] == [unsure.subject_id]


def test_a_delete_without_a_clear_answer_makes_the_subject_ambiguous():
    book = ledger()
    subject = book.new_subject("p")
    book.enrolled(subject, "p")
    book.delete_ambiguous(book.subject_to_delete(now=5.0), "p", sent_at=5.0)
    acknowledged, _, ambiguous = book.snapshot()
    assert acknowledged == [] and [s.subject_id for s in ambiguous] == [subject.subject_id]
    assert not book.is_acknowledged(subject.subject_id)


def test_refused_photos_are_retired_or_returned():
    book = ledger()
    first, second = book.new_subject("p"), book.new_subject("p")
    book.enrol_refused(first, photo_unusable=True)
    book.enrol_refused(second, photo_unusable=False)
    assert book.refused_photos == {first.photo}
    remaining = {book.new_subject("p").photo for _ in range(2)}
    assert first.photo not in remaining and second.photo in remaining
