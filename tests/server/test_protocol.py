"""The wire protocol module: every kind round-trips, every malformed message is refused with a reason."""

import pytest

from openmoshi.server import protocol as p
from openmoshi.server.protocol import Control, Kind, Message, ProtocolError


@pytest.mark.parametrize("msg, raw", [
    (Message(Kind.HANDSHAKE), b"\x00"),
    (Message(Kind.AUDIO, b"OggS\x00\x02"), b"\x01OggS\x00\x02"),
    (Message(Kind.TEXT, " héllo"), b"\x02" + " héllo".encode()),
    (Message(Kind.CONTROL, Control.PAUSE), b"\x03\x02"),
    (Message(Kind.METADATA, {"model": "tiny", "n": 2}), b'\x04{"model":"tiny","n":2}'),
    (Message(Kind.ERROR, "server full"), b"\x05server full"),
    (Message(Kind.PING), b"\x06"),
    (Message(Kind.COLORED_TEXT, (3, "word")), b"\x07\x03word"),
])
def test_every_kind_round_trips(msg, raw):
    assert p.encode(msg) == raw
    assert p.decode(raw) == msg


def test_the_clients_handshake_with_version_and_model_bytes():
    assert p.decode(b"\x00\x00\x00") == Message(Kind.HANDSHAKE)
    assert p.handshake() == b"\x00" and p.error("x") == b"\x05x" and p.text("a") == b"\x02a"


@pytest.mark.parametrize("raw, reason", [
    (b"", "empty message"),
    (b"\x08abc", "unknown message kind 0x08"),
    (b"\xffabc", "unknown message kind 0xff"),
    (b"\x01", "audio message without data"),
    (b"\x02\xff\xfe", "not valid UTF-8"),
    (b"\x03", "one byte"),
    (b"\x03\x01\x02", "one byte"),
    (b"\x03\x09", "unknown control action 9"),
    (b"\x04{", "not JSON"),
    (b"\x04[1, 2]", "JSON object"),
    (b"\x06x", "no payload"),
    (b"\x07", "colour byte"),
    (b"\x00\x01\x00", "handshake payload"),
    (b"\x01" + bytes(p.MAX_MESSAGE_BYTES), "exceeds"),
])
def test_malformed_messages_are_refused_with_a_reason(raw, reason):
    with pytest.raises(ProtocolError, match=reason):
        p.decode(raw)


def test_text_frames_are_refused():
    with pytest.raises(ProtocolError, match="binary"):
        p.decode("hello")  # a websocket text frame arrives as str


def test_encode_refuses_what_decode_would():
    with pytest.raises(ProtocolError):
        p.encode(Message(Kind.AUDIO, b""))
    with pytest.raises(ValueError):
        p.encode(Message(Kind.CONTROL, 7))


def test_query_parameters_of_kyutais_client():
    params, ignored = p.parse_query({"text_temperature": "0.7", "text_topk": "25", "audio_temperature": "0.8",
                                     "audio_topk": "250", "text_seed": "123", "audio_seed": str(2**64 - 1),
                                     "pad_mult": "0", "repetition_penalty": "1.0",
                                     "repetition_penalty_context": "64", "something_new": "1"})
    assert params == p.SessionParams(0.7, 25, 0.8, 250, 123, 2**64 - 1)
    assert ignored == ["pad_mult", "repetition_penalty", "repetition_penalty_context", "something_new"]
    assert p.parse_query({}) == (p.SessionParams(), [])


@pytest.mark.parametrize("query, reason", [
    ({"text_temperature": "hot"}, "must be a number"),
    ({"audio_temperature": "nan"}, "finite"),
    ({"audio_temperature": "-1"}, "finite"),
    ({"text_topk": "2.5"}, "integer"),
    ({"audio_topk": "-3"}, "0.."),
    ({"text_seed": str(2**64)}, "0.."),
])
def test_malformed_query_values_are_named(query, reason):
    with pytest.raises(ProtocolError, match=reason):
        p.parse_query(query)
