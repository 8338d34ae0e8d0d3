"""The pure pieces of complete mediation: the normalised view, decoding what the backend
decodes, splicing masked strings into the original bytes, and the stricter of two decisions."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.combine import stricter
from gateway.policy.decision import (
    AuditObligation,
    Decision,
    MaskAction,
    Obligations,
    Problem,
    Routing,
)
from gateway.privacy import MaskRule, apply_masks, scan, scan_text
from gateway.privacy.encoded import (
    Base64Form,
    BinaryPayload,
    InvalidBase64,
    TextPayload,
    classify_bytes,
    decode_base64,
    encode_base64,
    parse_data_url,
    sniff_media_type,
)
from gateway.privacy.masking import UnmaskableValue
from gateway.privacy.normalize import is_default_ignorable, normalise
from gateway.request.jsonsplice import SpliceError, replace_strings

# -- the normalised view ----------------------------------------------------------------------


def test_plain_ascii_is_its_own_view() -> None:
    assert normalise("call +49 30 23125000 now") is None
    assert normalise("tab\tand\nnewline") is None


def test_view_folds_and_maps_back() -> None:
    text = "a\u200bb\uff20c\u0000d\u00adé٣"
    view = normalise(text)
    assert view is not None
    assert view.text == "ab@cde3"
    # Each view character points at the original character it came from.
    assert [text[i] for i in view.origins] == ["a", "b", "\uff20", "c", "d", "é", "٣"]
    # A span covers the dropped characters inside it.
    assert view.original_span(0, 3) == (0, 4)


def test_default_ignorables() -> None:
    for char in "\u00ad\u034f\u200b\u200d\u2060\ufeff\ufe0f\U000e0041":
        assert is_default_ignorable(char), hex(ord(char))
    for char in "a ٣\u00a0":
        assert not is_default_ignorable(char)


NOISE = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\x00"])
VALUES = [
    ("email", "anna.schmidt@example.de"),
    ("phone", "+49 30 23125000"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("payment_card", "4111 1111 1111 1111"),
]


@settings(max_examples=300, deadline=None)
@given(
    value=st.sampled_from(VALUES),
    insertions=st.lists(st.tuples(st.integers(0, 40), NOISE), max_size=5),
    fullwidth=st.lists(st.integers(0, 40), max_size=6),
)
def test_hidden_characters_do_not_hide_a_value(
    value: tuple[str, str], insertions: list[tuple[int, str]], fullwidth: list[int]
) -> None:
    category, plain = value
    chars = list(plain)
    for position in fullwidth:
        index = position % len(chars)
        if "!" <= chars[index] <= "~":
            chars[index] = chr(ord(chars[index]) + 0xFEE0)
    for position, noise in insertions:
        chars.insert(position % (len(chars) + 1), noise)
    disguised = "".join(chars)
    text = f"see {disguised} here"
    found = scan_text(text)
    assert [c for c, _ in found] == [category], (text, found)
    (_, (start, end)) = found[0]
    # The span covers every visible character of the value and nothing outside it.
    assert text[:start] == "see " or text[:start].startswith("see ")
    assert text[end:].endswith(" here")
    masked, _ = apply_masks(text, scan(text), {category: MaskRule()})
    view = normalise(masked)
    assert plain not in (view.text if view else masked)


# -- decoding what the backend decodes --------------------------------------------------------


@given(st.binary(max_size=64))
def test_every_base64_form_round_trips(data: bytes) -> None:
    for alphabet in ("standard", "urlsafe"):
        for padded in (True, False):
            form = Base64Form(alphabet, padded)  # type: ignore[arg-type]
            text = encode_base64(data, form)
            decoded, seen = decode_base64(text)
            assert decoded == data
            if alphabet == "urlsafe":
                assert "+" not in text and "/" not in text
            if len(text) % 4 or "=" in text:
                assert seen == form or seen.alphabet == "standard"


@pytest.mark.parametrize("text", ["abc$", "a===", "abcde", "ab=c", "YQ=", " YWJj", "YWJj\n"])
def test_invalid_base64_is_refused(text: str) -> None:
    with pytest.raises(InvalidBase64):
        decode_base64(text)


def test_classify_bytes() -> None:
    assert classify_bytes("héllo".encode()) == TextPayload("héllo", "utf-8", b"")
    utf16 = b"\xff\xfe" + "mail a@b.de".encode("utf-16-le")
    assert classify_bytes(utf16) == TextPayload("mail a@b.de", "utf-16-le", b"\xff\xfe")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(200, 256))
    assert classify_bytes(png) == BinaryPayload("image/png", len(png))
    assert sniff_media_type(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "audio/wav"
    assert sniff_media_type(b"\x00\x00\x00\x18ftypisom") == "video/mp4"
    assert sniff_media_type(b"\xfe\xed") == "application/octet-stream"


def test_data_urls() -> None:
    url = parse_data_url("data:text/plain;charset=utf-8;base64,bWFpbA")
    assert url is not None and url.data == b"mail" and url.media_type == "text/plain"
    assert url.with_data(b"x?") == "data:text/plain;charset=utf-8;base64,eD8"
    percent = parse_data_url("data:,a%40b.de")
    assert percent is not None and percent.data == b"a@b.de" and percent.form is None
    assert parse_data_url("data:text/plain;base64,***") is None
    assert parse_data_url("not data:,x") is None


def test_utf16_b64_text_is_masked_in_utf16() -> None:
    raw = b"\xff\xfe" + "mail anna@example.de".encode("utf-16-le")
    document = {"note": {"b64": base64.b64encode(raw).decode()}}
    masked, entries = apply_masks(document, scan(document), {"email": MaskRule()})
    assert base64.b64decode(masked["note"]["b64"]) == b"\xff\xfe" + "mail [EMAIL]".encode(
        "utf-16-le"
    )
    assert entries == [{"path": "note.b64", "category": "email", "method": "redact"}]


def test_data_url_header_and_content_are_both_read() -> None:
    content = base64.b64encode(b"mail anna@example.de").decode()
    document = {"u": f"data:text/plain;ref=4111111111111111;base64,{content}"}
    found = scan(document)
    assert {(f.category, f.encoding) for f in found} == {
        ("payment_card", ""),
        ("email", "data_url"),
    }
    masked, _ = apply_masks(document, found, {"email": MaskRule(), "payment_card": MaskRule()})
    header, body = masked["u"].split(",", 1)
    assert header == "data:text/plain;ref=[PAYMENT_CARD];base64"
    assert base64.b64decode(body + "==") == b"mail [EMAIL]"


def test_findings_in_binary_are_reported_but_cannot_be_masked() -> None:
    record = b"\x0a\x8f\xff\x01note\x12\x20anna@example.de\xfe"
    document = {"x": {"b64": base64.b64encode(record).decode()}}
    found = scan(document)
    assert [(f.category, f.encoding) for f in found] == [("email", "binary")]
    assert [b.media_type for b in found.binary] == ["application/octet-stream"]
    with pytest.raises(UnmaskableValue):
        apply_masks(document, found, {"email": MaskRule()})
    # Without a rule for the category nothing has to be rewritten.
    assert apply_masks(document, found, {"phone": MaskRule()}) == (document, [])


def test_undecodable_b64_is_listed() -> None:
    found = scan({"instances": [{"b64": "%%%"}]})
    assert found.undecodable == ("instances[0].b64",)


def test_strictjson_withholds_the_string_shortcut_for_b64_bodies() -> None:
    from gateway.request.strictjson import parse_body

    assert parse_body(b'{"a": "x"}').strings == ("x",)
    assert parse_body(b'{"a": {"b64": "eA=="}}').strings is None
    assert parse_body(b'{"a": {"\\u0062\\u0036\\u0034": "eA=="}}').strings is None


# -- splicing ---------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)  # fmt: skip


def _string_locations(value: Any, path: tuple[str | int, ...] = ()) -> list[Any]:
    if isinstance(value, str):
        return [path]
    if isinstance(value, list):
        return [loc for i, item in enumerate(value) for loc in _string_locations(item, (*path, i))]
    if isinstance(value, dict):
        return [loc for k, item in value.items() for loc in _string_locations(item, (*path, k))]
    return []


def _set(value: Any, path: tuple[str | int, ...], new: str) -> Any:
    if not path:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[path[0]] = _set(value[path[0]], path[1:], new)  # type: ignore[index]
    return copy


@settings(max_examples=300, deadline=None)
@given(document=JSON_VALUES, data=st.data(), indent=st.sampled_from([None, 1, 4]))
def test_splicing_changes_only_the_replaced_strings(
    document: Any, data: st.DataObject, indent: int | None
) -> None:
    raw = json.dumps(document, indent=indent, ensure_ascii=data.draw(st.booleans())).encode()
    locations = _string_locations(document)
    chosen = data.draw(st.lists(st.sampled_from(locations), unique=True)) if locations else []
    replacements = {tuple(loc): f'[X{i}\u00e9"]' for i, loc in enumerate(chosen)}
    spliced = replace_strings(raw, replacements)
    expected = document
    for loc, new in replacements.items():
        expected = _set(expected, loc, new)
    assert json.loads(spliced) == expected
    if not replacements:
        assert spliced == raw


def test_splicing_keeps_nan_and_number_spelling() -> None:
    raw = b'{"a": [NaN, 1.0, 1e5, -0], "b": "mail a@b.de", "c": Infinity}'
    assert replace_strings(raw, {("b",): "mail [EMAIL]"}) == raw.replace(
        b"mail a@b.de", b"mail [EMAIL]"
    )
    with pytest.raises(SpliceError):
        replace_strings(raw, {("a", 0): "x"})


def test_splicing_reads_escaped_keys() -> None:
    raw = b'{"n\\u006fte": "x", "note2": ["y"]}'
    out = replace_strings(raw, {("note",): "X", ("note2", 0): "Y"})
    assert orjson.loads(out) == {"note": "X", "note2": ["Y"]}


# -- the stricter of two decisions ------------------------------------------------------------


def _decision(
    effect: str = "allow",
    *,
    rules: tuple[str, ...] = (),
    obligations: Obligations | None = None,
) -> Decision:
    denied = effect == "deny"
    return Decision(
        effect=effect,
        status=451 if denied else 200,
        stage="x",
        rules=rules,
        dry_run=(),
        legal_basis=(),
        problem=Problem("legal", "t", "d") if denied else None,
        obligations=obligations or Obligations(),
        errors=(),
        policy_revision="r",
    )


def test_stricter_prefers_a_denial() -> None:
    allow, deny = _decision(), _decision("deny", rules=("ban",))
    assert stricter(allow, deny) is deny
    assert stricter(deny, allow) is deny
    other = _decision("deny", rules=("other",))
    assert stricter(deny, other) is deny


def test_stricter_merges_the_obligations_of_two_allows() -> None:
    first = _decision(
        rules=("a",),
        obligations=Obligations(
            mask={"email": MaskAction("keep_last", 4), "phone": MaskAction("hash")},
            routing=Routing(("DE", "FR", "US"), ("be-de", "be-fr", "be-us")),
            headers=(("X-A", "1"),),
            audit=AuditObligation(30, None),
        ),
    )
    second = _decision(
        rules=("b",),
        obligations=Obligations(
            mask={"email": MaskAction("redact"), "iban": MaskAction("keep_last", 2)},
            routing=Routing(("FR", "DE"), ("be-fr", "be-de")),
            headers=(("X-A", "2"), ("X-B", "3")),
            audit=AuditObligation(90, "DE"),
        ),
    )
    merged = stricter(first, second)
    assert merged.allowed and merged.rules == ("a", "b")
    assert dict(merged.obligations.mask) == {
        "email": MaskAction("redact"),
        "phone": MaskAction("hash"),
        "iban": MaskAction("keep_last", 2),
    }
    assert merged.obligations.routing is not None
    assert merged.obligations.routing.allowed_regions == ("DE", "FR")
    assert merged.obligations.headers == (("X-A", "1"), ("X-B", "3"))
    assert merged.obligations.audit == AuditObligation(90, "DE")
