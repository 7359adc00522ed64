"""Message: the wire shape (`from`, not `from_`), reply semantics, unique ids."""

import msgspec
import pytest

from nexus.kernel import Message, MessageKind
from nexus.kernel.message import decode_message, encode_message


def test_reply_goes_back_to_sender_in_the_same_conversation_and_trace() -> None:
    original = Message(from_="a", to="b", kind=MessageKind.QUERY, payload={"q": 1}, trace_id="t-1")
    reply = original.reply("b", {"answer": 2})
    assert (reply.from_, reply.to, reply.kind) == ("b", "a", MessageKind.RESPONSE)
    assert reply.reply_to == original.id
    assert reply.conversation_id == original.id  # a conversation starts at its first message
    assert reply.trace_id == "t-1"
    assert reply.payload == {"answer": 2}
    assert reply.id != original.id


def test_reply_keeps_an_existing_conversation_id() -> None:
    original = Message(from_="a", to="b", kind=MessageKind.COMMAND, conversation_id="conv-9")
    assert original.reply("b").conversation_id == "conv-9"


def test_wire_form_spells_from_and_round_trips() -> None:
    m = Message(from_="a", to="b", kind=MessageKind.EVENT, payload=[1, "x"])
    wire = msgspec.json.decode(encode_message(m))
    assert wire["from"] == "a" and "from_" not in wire
    assert wire["kind"] == "Event"
    assert "reply_to" not in wire  # unset optionals stay off the wire
    assert decode_message(encode_message(m)) == m


def test_decoding_requires_from_to_and_kind() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_message(b'{"to": "b", "kind": "Event"}')
    with pytest.raises(msgspec.ValidationError):
        decode_message(b'{"from": "a", "to": "b", "kind": "Shout"}')


def test_decoding_fills_id_and_timestamp_when_absent() -> None:
    m = decode_message(b'{"from": "a", "to": "b", "kind": "Command"}')
    assert m.id and m.timestamp > 0


def test_ids_are_unique() -> None:
    ids = {Message(from_="a", to="b", kind=MessageKind.EVENT).id for _ in range(10_000)}
    assert len(ids) == 10_000
