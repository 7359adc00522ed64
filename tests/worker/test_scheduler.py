"""When a schedule's occurrences are due: on time, missed after downtime (skipped or caught up to a
cap), and in the schedule's time zone (daylight saving time included). No servers needed."""

from datetime import UTC, datetime, timedelta

from nexus.worker.scheduler import due_occurrences, occurrence_id

NOON = datetime(2025, 1, 15, 12, 0, 30, tzinfo=UTC)


def due(cron: str, after: datetime, now: datetime = NOON, tz: str = "UTC", missed: str = "skip", cap: int = 3):
    return due_occurrences(cron, tz, after, now, missed=missed, catch_up_limit=cap, grace_s=60)


def test_an_occurrence_fires_once_it_is_due_and_not_before() -> None:
    assert due("* * * * *", NOON - timedelta(seconds=45)) == [(datetime(2025, 1, 15, 12, 0, tzinfo=UTC), False)]
    assert due("* * * * *", datetime(2025, 1, 15, 12, 0, tzinfo=UTC)) == []  # already handled
    assert due("0 13 * * *", NOON - timedelta(hours=1)) == []


def test_missed_occurrences_are_skipped_after_downtime() -> None:
    assert due("* * * * *", NOON - timedelta(days=30)) == [(datetime(2025, 1, 15, 12, 0, tzinfo=UTC), False)]
    assert due("0 * * * *", NOON - timedelta(days=30)) == [
        (datetime(2025, 1, 15, 12, 0, tzinfo=UTC), False)
    ]  # 30 s old: on time
    assert due("0 * * * *", NOON - timedelta(days=30), now=NOON + timedelta(minutes=5)) == []  # …5 minutes late: missed


def test_missed_occurrences_are_caught_up_to_the_cap_newest_first() -> None:
    got = due("0 * * * *", NOON - timedelta(days=30), now=NOON + timedelta(minutes=5), missed="catch_up", cap=3)
    assert got == [(datetime(2025, 1, 15, h, 0, tzinfo=UTC), True) for h in (10, 11, 12)]
    got = due(
        "0 * * * *", NOON - timedelta(hours=2, minutes=30), now=NOON + timedelta(minutes=5), missed="catch_up", cap=10
    )
    assert [t.hour for t, _ in got] == [10, 11, 12]  # never before the anchor


def test_cron_is_read_in_the_schedule_time_zone_across_daylight_saving() -> None:
    winter = due(
        "0 9 * * *",
        datetime(2025, 1, 14, 12, tzinfo=UTC),
        now=datetime(2025, 1, 15, 8, 0, 5, tzinfo=UTC),
        tz="Europe/Paris",
    )
    summer = due(
        "0 9 * * *",
        datetime(2025, 7, 14, 12, tzinfo=UTC),
        now=datetime(2025, 7, 15, 7, 0, 5, tzinfo=UTC),
        tz="Europe/Paris",
    )
    assert winter == [(datetime(2025, 1, 15, 8, 0, tzinfo=UTC), False)]  # 09:00 CET
    assert summer == [(datetime(2025, 7, 15, 7, 0, tzinfo=UTC), False)]  # 09:00 CEST


def test_occurrence_ids_are_deterministic() -> None:
    at = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
    assert occurrence_id("sch_1", at) == occurrence_id("sch_1", at.astimezone()) == "sch_1@20250115T120000Z"
