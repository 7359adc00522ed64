"""What no store can keep is found wherever a JSON body holds it, however it is escaped: the quick literal
search in front of the escape pattern (limits.unstorable) must never let one through."""

import pytest

from nexus.domain.limits import INT64_MESSAGE, NUL_MESSAGE, unstorable


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (rb'{"a": "x\u0000y"}', ("a", NUL_MESSAGE)),
        (rb'{"a": {"b": ["ok", "\u0000"]}}', ("a.b[1]", NUL_MESSAGE)),
        (rb'{"\u0000": 1}', ("\x00", NUL_MESSAGE)),
        (rb'{"a": "\\u0000"}', None),  # an escaped backslash, then the letters: no NUL
        (rb'{"a": "\\\u0000"}', ("a", NUL_MESSAGE)),  # an escaped backslash, then a NUL
        (rb'{"a": "\\\\u0000"}', None),
        (rb'{"a": "u0000"}', None),
        (rb'{"a": 12345678901234567890}', ("a", INT64_MESSAGE)),
        (rb'{"a": 1234567890123456789}', None),  # 19 digits, inside the signed 64-bit range
        (rb'{"a": "plain", "b": [1, 2.5, null]}', None),
    ],
)
def test_what_no_store_can_keep_is_found_however_it_is_escaped(body: bytes, found: tuple[str, str] | None) -> None:
    assert unstorable(body) == found


def test_integers_only_leaves_a_nul_to_the_caller() -> None:
    assert unstorable(rb'{"a": "\u0000"}', nul=False) is None
