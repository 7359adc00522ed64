"""Chat text: escaped for Telegram's HTML parse mode, split under 4096 UTF-16 units without cutting a
tag; /goal's optional tails."""

import re

import pytest

from nexus.telegram_gateway.bot import parse_goal
from nexus.telegram_gateway.render import decided_text
from nexus.telegram_gateway.text import LIMIT, esc, pack, plain, pre, units


def test_escaping() -> None:
    assert esc("<b>a & b</b>") == "&lt;b&gt;a &amp; b&lt;/b&gt;"


def test_long_diff_is_split_into_whole_blocks_under_the_limit() -> None:
    diff = "".join(f"+ line {i} <tag> & 😀\n" for i in range(3000))
    messages = pack(["<b>Approval needed</b>", *pre(diff)])
    assert len(messages) > 1
    assert all(units(m) <= LIMIT for m in messages)
    assert all(m.count("<pre>") == m.count("</pre>") for m in messages)
    assert messages[0] == "<b>Approval needed</b>"  # the next block would not fit beside it
    assert "".join(m.removeprefix("<pre>").removesuffix("</pre>") for m in messages[1:]) == esc(diff)  # nothing lost


def test_astral_characters_count_twice() -> None:
    (one,) = plain("😀" * 2048)
    assert units(one) == LIMIT
    assert len(plain("😀" * 2049)) == 2


def test_decided_text_keeps_the_header_of_a_long_alert() -> None:
    alert = "<b>header</b>\n" + pre("y" * 5000)[0]
    edited = decided_text(alert, "✅ Approved")
    assert units(edited) <= LIMIT and edited.startswith("<b>header</b>\n…") and edited.endswith("✅ Approved")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ship the login page", ("Ship the login page", None, None)),
        ("Ship it in web with planner", ("Ship it", "web", "planner")),
        ("Ship it with planner in web", ("Ship it", "web", "planner")),
        ("Log in with email", ("Log in", None, "email")),
        ("", ("", None, None)),
    ],
)
def test_parse_goal(text, expected) -> None:
    assert parse_goal(text) == expected


def _balanced(message: str) -> bool:
    stack = []
    for closing, name in re.findall(r"<(/?)([a-z]+)[^>]*>", message):
        if closing:
            if not stack or stack.pop() != name:
                return False
        else:
            stack.append(name)
    return not stack


@pytest.mark.parametrize(
    "block",
    [
        "⚠️ " + esc("approval '" + "<" * 2000 + "😀" * 1000 + "' not found"),
        f"🎯 Goal <code>goal_1</code> created: <b>{esc('&' * 3000)}</b> <i>{'é' * 3000}</i>",
        "<code>" + esc("<script>alert(1)</script>" * 400) + "</code> tail",
        '<a href="https://x.example/runs/1">' + "😀" * 3000 + "</a>",
    ],
)
def test_a_block_longer_than_a_message_is_cut_between_tags_and_entities(block: str) -> None:
    messages = pack(["<b>header</b>", block, "footer"])
    assert len(messages) > 1 and all(units(m) <= LIMIT for m in messages)
    assert all(_balanced(m) for m in messages), messages
    assert not any(re.search(r"&[#\w]*$|<[^>]*$", m) for m in messages)  # no entity or tag cut in half
    text = "".join(re.sub(r"<[^>]+>", "", m).replace("\n", "") for m in messages)
    assert text == re.sub(r"<[^>]+>", "", "<b>header</b>" + block + "footer")  # nothing lost
