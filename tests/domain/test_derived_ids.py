"""A derived id names a thing by what it is: a retried meta attempt that plans the same child again
names the same child (core-api then plans it once), and a different child gets another id."""

import re

from nexus.domain.ids import derived_id, new_id


def test_the_same_child_planned_again_has_the_same_id_and_another_child_another() -> None:
    meta = new_id("ses")
    first = derived_id("ses", meta, "0", "Write a", "a.txt")
    assert derived_id("ses", meta, "0", "Write a", "a.txt") == first
    others = {
        derived_id("ses", meta, "1", "Write a", "a.txt"),  # a second child like it, later in the plan
        derived_id("ses", meta, "0", "Write b", "a.txt"),
        derived_id("ses", new_id("ses"), "0", "Write a", "a.txt"),  # another meta session's
    }
    assert first not in others and len(others) == 3


def test_a_derived_id_looks_like_any_id_and_sorts_with_its_parent() -> None:
    meta = new_id("ses")
    child = derived_id("ses", meta, "0", "Write a")
    assert re.fullmatch(r"ses_[0-9a-hjkmnp-tv-z]{26}", child)
    assert child[:14] == meta[:14]  # the parent's time part
