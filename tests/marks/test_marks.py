"""Provenance marks in generated images: pixels untouched, marks readable, hostile input refused."""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

import gateway.marks as marks
from gateway.marks import (
    AigcImplicitLabel,
    DigitalSourceType,
    DigitalSourceTypeMark,
    ExplicitLabel,
    ImageMarkError,
    apply_marks,
    build_marks,
    mark_predict_response,
    marks_for_obligations,
    read_marks,
)

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
BOTH = build_marks(
    ["iptc_digital_source_type", "cn_aigc_implicit_label"],
    content_producer="001191101085MA01KP2T5U00001",
    produce_id="3f0c2b9e-decision",
    content_propagator="Example MaaS Gateway Operator",
)


def _photo(size: int = 256) -> Image.Image:
    # Noise defeats PNG filters and JPEG smoothing, so a changed pixel would show.
    return Image.frombytes("RGB", (size, size), random.Random(7).randbytes(size * size * 3))


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def png() -> bytes:
    return _encode(_photo(), "PNG")


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return _encode(_photo(), "JPEG", quality=90)


@pytest.fixture(scope="module")
def webp() -> bytes:
    return _encode(_photo(), "WEBP", lossless=True)


def _pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.tobytes()


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _insert_before_iend(data: bytes, chunk: bytes) -> bytes:
    return data[:-12] + chunk + data[-12:]


def _sos_onwards(data: bytes) -> bytes:
    pos = 2
    while data[pos + 1] != 0xDA:
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return data[pos:]


def _xmp_root(data: bytes) -> ET.Element:
    with Image.open(io.BytesIO(data)) as image:
        return ET.fromstring(image.info["xmp"])


# ----------------------------------------------------------------------------- PNG


def test_png_marks_leave_pixels_and_image_data_untouched(png: bytes) -> None:
    marked = apply_marks(png, BOTH)

    assert _pixels(marked) == _pixels(png)
    idat = [body for ctype, body in _png_chunks(png) if ctype == b"IDAT"]
    assert [body for ctype, body in _png_chunks(marked) if ctype == b"IDAT"] == idat


def test_png_marks_read_back(png: bytes) -> None:
    found = read_marks(apply_marks(png, BOTH))

    assert found["format"] == "png"
    assert found["digital_source_type"] == TRAINED
    assert found["aigc"] == {
        "Label": "1",
        "ContentProducer": "001191101085MA01KP2T5U00001",
        "ProduceID": "3f0c2b9e-decision",
        "ReservedCode1": "",
        "ContentPropagator": "Example MaaS Gateway Operator",
        "PropagateID": "",
        "ReservedCode2": "",
    }
    assert found["aigc_text_chunk"] == found["aigc"]


def test_png_marks_are_where_other_readers_look(png: bytes) -> None:
    marked = apply_marks(png, BOTH)
    itxt = [body.split(b"\x00", 1)[0] for ctype, body in _png_chunks(marked) if ctype == b"iTXt"]
    assert itxt == [b"XML:com.adobe.xmp", b"AIGC"]

    with Image.open(io.BytesIO(marked)) as image:
        assert json.loads(image.text["AIGC"])["Label"] == "1"
        root = ET.fromstring(image.info["xmp"])
    ns = {
        "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
        "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
        "TC260": "http://www.tc260.org.cn/ns/AIGC/1.0/",
    }
    assert (
        root.findtext(".//rdf:Description/Iptc4xmpExt:DigitalSourceType", namespaces=ns) == TRAINED
    )
    label = root.findtext(".//rdf:Description/TC260:AIGC", namespaces=ns)
    assert label is not None and json.loads(label)["ProduceID"] == "3f0c2b9e-decision"


def test_unmarked_image_reads_as_unmarked(png: bytes) -> None:
    assert read_marks(png) == {
        "format": "png",
        "xmp": False,
        "digital_source_type": None,
        "aigc": None,
        "aigc_text_chunk": None,
    }


def test_source_type_is_selectable(png: bytes) -> None:
    (mark,) = build_marks(
        ["iptc-digital-source-type"], source_type="compositeWithTrainedAlgorithmicMedia"
    )
    found = read_marks(apply_marks(png, [mark]))

    assert found["digital_source_type"] == COMPOSITE
    assert found["aigc"] is None and found["aigc_text_chunk"] is None
    assert (
        DigitalSourceType.parse(COMPOSITE)
        is DigitalSourceType.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    )


def test_existing_chunks_survive_byte_for_byte(png: bytes) -> None:
    # A C2PA manifest travels in a `caBX` chunk; re-saving with Pillow would lose it.
    manifest = _png_chunk(b"caBX", b"c2pa manifest store bytes")
    original = _insert_before_iend(png, manifest)

    marked = apply_marks(original, BOTH)

    assert manifest in marked
    assert _pixels(marked) == _pixels(original)


def test_existing_aigc_label_keeps_its_fields(png: bytes) -> None:
    upstream = {
        "Label": "1",
        "ContentProducer": "upstream-provider",
        "ProduceID": "up-42",
        "ReservedCode1": "signed",
        "ContentPropagator": "",
        "PropagateID": "",
        "ReservedCode2": "",
        "SecurityData": "abc",
    }
    info = PngImagePlugin.PngInfo()
    info.add_itxt("AIGC", json.dumps(upstream))
    original = _encode(_photo(64), "PNG", pnginfo=info)

    found = read_marks(apply_marks(original, BOTH))

    assert found["aigc"] == found["aigc_text_chunk"]
    assert found["aigc"] == {**upstream, "ContentPropagator": "Example MaaS Gateway Operator"}


def test_existing_xmp_properties_are_kept(png: bytes) -> None:
    packet = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture">'
        "<dc:format>image/png</dc:format></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet)
    original = _encode(_photo(64), "PNG", pnginfo=info)
    capture = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
    assert read_marks(original)["digital_source_type"] == capture

    marked = apply_marks(original, BOTH)

    assert read_marks(marked)["digital_source_type"] == TRAINED
    ns = {"dc": "http://purl.org/dc/elements/1.1/"}
    assert _xmp_root(marked).findtext(".//dc:format", namespaces=ns) == "image/png"


# ----------------------------------------------------------------------------- JPEG


def test_jpeg_scan_is_copied_not_reencoded(jpeg: bytes) -> None:
    marked = apply_marks(jpeg, BOTH)

    assert _sos_onwards(marked) == _sos_onwards(jpeg)
    assert _pixels(marked) == _pixels(jpeg)
    assert len(marked) > len(jpeg)


def test_jpeg_marks_read_back_and_sit_after_jfif_and_exif(jpeg: bytes) -> None:
    exif = Image.Exif()
    exif[0x0131] = "renderer"  # Software
    original = _encode(_photo(64), "JPEG", exif=exif.tobytes())

    marked = apply_marks(original, BOTH)

    found = read_marks(marked)
    assert found["format"] == "jpeg"
    assert found["digital_source_type"] == TRAINED
    assert found["aigc"] is not None and found["aigc"]["ProduceID"] == "3f0c2b9e-decision"
    with Image.open(io.BytesIO(marked)) as image:
        assert image.getexif()[0x0131] == "renderer"
    markers = []
    pos = 2
    while marked[pos + 1] != 0xDA:
        markers.append(marked[pos + 1])
        pos += 2 + struct.unpack_from(">H", marked, pos + 2)[0]
    assert markers[:3] == [0xE0, 0xE1, 0xE1]  # JFIF, Exif, then our XMP
    assert marked[pos - len(marked) :] == _sos_onwards(original)


# ----------------------------------------------------------------------------- WebP


@pytest.mark.parametrize("options", [{"lossless": True}, {"quality": 80}], ids=["vp8l", "vp8"])
def test_webp_bitstream_untouched(options: dict[str, object]) -> None:
    original = _encode(_photo(64), "WEBP", **options)

    marked = apply_marks(original, BOTH)

    assert _pixels(marked) == _pixels(original)
    assert read_marks(marked)["digital_source_type"] == TRAINED
    assert _xmp_root(marked) is not None  # Pillow's WebP reader finds the packet


# ----------------------------------------------------------------------------- all formats


@pytest.mark.parametrize("fixture", ["png", "jpeg", "webp"])
def test_marking_twice_is_marking_once(fixture: str, request: pytest.FixtureRequest) -> None:
    original: bytes = request.getfixturevalue(fixture)
    once = apply_marks(original, BOTH)

    assert apply_marks(once, BOTH) == once
    iptc_only = [DigitalSourceTypeMark()]
    assert apply_marks(apply_marks(original, iptc_only), iptc_only) == apply_marks(
        original, iptc_only
    )


def test_conflicting_and_unknown_marks_are_refused(png: bytes) -> None:
    with pytest.raises(ImageMarkError) as conflict:
        apply_marks(
            png,
            [
                DigitalSourceTypeMark(DigitalSourceType.TRAINED_ALGORITHMIC_MEDIA),
                DigitalSourceTypeMark(DigitalSourceType.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA),
            ],
        )
    assert conflict.value.code == "image_mark_conflict"
    with pytest.raises(ImageMarkError, match="image_mark_unknown"):
        build_marks(["visible-watermark"])
    with pytest.raises(ImageMarkError, match="ContentProducer and ProduceID"):
        build_marks(["cn-aigc-implicit-label"])
    with pytest.raises(ImageMarkError, match="digitalCapture"):
        build_marks(["iptc-digital-source-type"], source_type="digitalCapture")
    with pytest.raises(ImageMarkError, match="Label"):
        AigcImplicitLabel(content_producer="p", produce_id="i", label="0")


@dataclass(frozen=True)
class Obligation:
    """The shape of a decision's image-mark obligation."""

    scheme: str
    value: str | None = None
    fields: tuple[tuple[str, str], ...] = ()


def test_marks_from_decision_obligations(png: bytes) -> None:
    obligations = [
        Obligation("iptc_digital_source_type", "compositeWithTrainedAlgorithmicMedia"),
        Obligation("cn_aigc_implicit_label", fields=(("ContentProducer", "policy-producer"),)),
        Obligation("cn_aigc_explicit_label"),  # drawn on the pixels
    ]

    got = marks_for_obligations(obligations, content_producer="cfg", produce_id="decision-7")

    assert got == (
        DigitalSourceTypeMark(DigitalSourceType.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA),
        AigcImplicitLabel(content_producer="policy-producer", produce_id="decision-7"),
        ExplicitLabel(),
    )
    bare = [Obligation("iptc_digital_source_type")]
    default = marks_for_obligations(bare, content_producer="", produce_id="")
    assert default == (DigitalSourceTypeMark(DigitalSourceType.TRAINED_ALGORITHMIC_MEDIA),)
    altering = marks_for_obligations(
        bare, content_producer="", produce_id="", substantially_alters_input=True
    )
    assert altering == (
        DigitalSourceTypeMark(DigitalSourceType.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA),
    )
    with pytest.raises(ImageMarkError, match="`ProduceID` cannot be set"):
        marks_for_obligations(
            [Obligation("cn_aigc_implicit_label", fields=(("ProduceID", "fixed"),))],
            content_producer="cfg",
            produce_id="decision-7",
        )
    with pytest.raises(ImageMarkError, match="unknown image mark `c2pa`"):
        marks_for_obligations([Obligation("c2pa")], content_producer="cfg", produce_id="d")


# ----------------------------------------------------------------------------- hostile input


def _truncations(png: bytes) -> list[bytes]:
    return [png[:n] for n in (0, 7, 8, 20, 33, 40, len(png) // 2, len(png) - 12, len(png) - 1)]


def test_truncated_png_is_refused(png: bytes) -> None:
    for data in _truncations(png):
        with pytest.raises(ImageMarkError) as err:
            apply_marks(data, BOTH)
        assert err.value.code in {"image_malformed", "image_unsupported"}, len(data)


@pytest.mark.parametrize("length", [0x7FFFFFF0, 0xFFFFFFFF, 1 << 20])
def test_huge_chunk_length_is_refused(png: bytes, length: int) -> None:
    # The IDAT length field sits right after IHDR (8 + 25 bytes in).
    hostile = png[:33] + struct.pack(">I", length) + png[37:]

    with pytest.raises(ImageMarkError, match="past the end") as err:
        apply_marks(hostile, BOTH)
    assert err.value.code == "image_malformed"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[:40] + bytes([d[40] ^ 1]) + d[41:], "CRC"),
        (lambda d: d + b"trailing", "after its IEND"),
        (lambda d: d[:8] + _png_chunk(b"tEXt", b"a\x00b") + d[8:], "IHDR"),
        (lambda d: _insert_before_iend(d, _png_chunk(b"tE$t", b"")), "bad type"),
        (lambda d: _insert_before_iend(d, _png_chunk(b"tEXt", b"\x00no keyword")), "keyword"),
    ],
    ids=["bad-crc", "trailing-data", "ihdr-not-first", "bad-type", "bad-keyword"],
)
def test_malformed_png_is_refused(
    png: bytes, mutate: Callable[[bytes], bytes], message: str
) -> None:
    with pytest.raises(ImageMarkError, match=message):
        apply_marks(mutate(png), BOTH)


def test_compressed_metadata_bomb_is_refused(png: bytes) -> None:
    bomb = zlib.compress(b" " * (8 << 20), 9)  # 8 MiB of spaces in about 8 KiB
    hostile = _insert_before_iend(
        png, _png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + bomb)
    )

    with pytest.raises(ImageMarkError, match="inflates past"):
        apply_marks(hostile, BOTH)
    with pytest.raises(ImageMarkError, match="inflates past"):
        read_marks(hostile)


def test_xmp_with_a_dtd_is_refused(png: bytes) -> None:
    packet = (
        '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>'
    )
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet)
    hostile = _encode(_photo(16), "PNG", pnginfo=info)

    with pytest.raises(ImageMarkError, match="DTD") as err:
        apply_marks(hostile, BOTH)
    assert err.value.code == "image_metadata_malformed"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8"])
def test_xmp_with_a_dtd_is_refused_whatever_the_encoding(encoding: str) -> None:
    from gateway.marks.xmp import parse_xmp

    declared = "UTF-16" if encoding.startswith("utf-16") else encoding.upper()
    packet = (
        f'<?xml version="1.0" encoding="{declared}"?>'
        '<!DOCTYPE x [<!ENTITY b "expanded">]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>'
    ).encode(encoding)
    with pytest.raises(ImageMarkError) as err:
        root = parse_xmp(packet)
        raise AssertionError(f"parsed, entity expanded to {root.text!r}")
    assert err.value.code == "image_metadata_malformed"
    if encoding != "utf-32":  # the parser reads no UTF-32 at all: refused as not XML
        assert "DTD" in str(err.value)
        plain = f'<?xml version="1.0" encoding="{declared}"?><x/>'.encode(encoding)
        assert parse_xmp(plain).tag == "x"


def test_two_differing_aigc_labels_are_refused() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("AIGC", json.dumps({"Label": "1", "ContentProducer": "a", "ProduceID": "1"}))
    labelled = _encode(_photo(16), "PNG", pnginfo=info)
    # An XMP packet whose label names another producer, as a forger might add.
    other = apply_marks(_encode(_photo(16), "PNG"), [AigcImplicitLabel("b", "2")])
    xmp_chunk = next(
        c for c in _png_chunks(other) if c[0] == b"iTXt" and c[1].startswith(b"XML:com.adobe.xmp")
    )
    hostile = _insert_before_iend(labelled, _png_chunk(*xmp_chunk))

    with pytest.raises(ImageMarkError, match="two AIGC labels"):
        apply_marks(hostile, BOTH)


def test_truncated_or_broken_jpeg_is_refused(jpeg: bytes) -> None:
    cases = [
        (jpeg[:-2], "no end of image"),
        (jpeg[:21], "truncated in its headers"),  # cut right after the JFIF segment
        (jpeg[:30], "overruns the file"),
        (jpeg[:4] + b"\xff\xff" + jpeg[6:], "overruns the file"),
        (jpeg[:2] + b"\xff\xd9" + jpeg[2:], "before the first scan"),
        (jpeg[:20] + b"\x00" + jpeg[20:], "marker expected"),
    ]
    for data, message in cases:
        with pytest.raises(ImageMarkError, match=message):
            apply_marks(data, BOTH)


def test_broken_webp_is_refused(webp: bytes) -> None:
    with pytest.raises(ImageMarkError, match="RIFF size"):
        apply_marks(webp[:-4], BOTH)
    bad_size = webp[:16] + struct.pack("<I", 1 << 30) + webp[20:]
    with pytest.raises(ImageMarkError, match="overruns"):
        apply_marks(bad_size, BOTH)


@pytest.mark.parametrize(
    "data, message",
    [(b"GIF89a" + b"\x00" * 20, "GIF"), (b"hello", "not a PNG"), (b"", "not a PNG")],
)
def test_unsupported_formats_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ImageMarkError, match=message) as err:
        apply_marks(data, BOTH)
    assert err.value.code == "image_unsupported"


_SMALL_PNG = _encode(_photo(8), "PNG")
_SMALL_JPEG = _encode(_photo(8), "JPEG")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([_SMALL_PNG, _SMALL_JPEG]),
    cut=st.integers(min_value=0, max_value=2000),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=4),
)
def test_damaged_images_give_marked_bytes_or_the_typed_error(
    base: bytes, cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(base[: max(cut, 2)] if cut < len(base) else base)
    for at, xor in flips:
        if at < len(data):
            data[at] ^= xor
    try:
        marked = apply_marks(bytes(data), BOTH)
    except ImageMarkError:
        return
    assert read_marks(marked)["digital_source_type"] == TRAINED


# ----------------------------------------------------------------------------- predict responses


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_row_response_images_marked_and_other_bytes_kept(png: bytes, jpeg: bytes) -> None:
    # TF Serving's own layout: pretty-printed, float32 digits and a bare NaN.
    body = (
        '{\n    "predictions": [\n        {"image_bytes": {"b64": "PNG"}, '
        '"score": [0.910000026, NaN]},\n        {"image_bytes": {"b64": "JPEG"}, '
        '"score": [1e-05, 3.0]}\n    ]\n}'
    )
    body = body.replace("PNG", _b64(png)).replace("JPEG", _b64(jpeg)).encode()

    result = mark_predict_response(body, BOTH)

    assert result.paths == ("predictions[0].image_bytes.b64", "predictions[1].image_bytes.b64")
    document = json.loads(result.body)
    marked_png = base64.b64decode(document["predictions"][0]["image_bytes"]["b64"])
    marked_jpeg = base64.b64decode(document["predictions"][1]["image_bytes"]["b64"])
    assert marked_png == apply_marks(png, BOTH)
    assert marked_jpeg == apply_marks(jpeg, BOTH)
    unmarked = result.body.replace(_b64(marked_png).encode(), _b64(png).encode())
    unmarked = unmarked.replace(_b64(marked_jpeg).encode(), _b64(jpeg).encode())
    assert unmarked == body


def test_columnar_response_and_escaped_slashes(png: bytes) -> None:
    escaped = _b64(png).replace("/", "\\/")
    body = '{"outputs": {"image_bytes": [[{"b64": "IMAGE"}]], "note": "ok"}}'
    body = body.replace("IMAGE", escaped).encode()

    marked_body, paths = mark_predict_response(body, BOTH)

    assert paths == ("outputs.image_bytes[0][0].b64",)
    document = json.loads(marked_body)
    marked = base64.b64decode(document["outputs"]["image_bytes"][0][0]["b64"])
    assert read_marks(marked)["aigc"] is not None
    assert document["outputs"]["note"] == "ok"


def test_non_image_binaries_are_left_alone(png: bytes) -> None:
    body = json.dumps(
        {"predictions": [{"mask_bytes": {"b64": _b64(b"\x00\x01raw")}, "img": {"b64": _b64(png)}}]}
    ).encode()

    result = mark_predict_response(body, BOTH)

    assert result.paths == ("predictions[0].img.b64",)
    assert json.loads(result.body)["predictions"][0]["mask_bytes"] == {"b64": _b64(b"\x00\x01raw")}


def test_response_without_images_fails_closed_unless_allowed() -> None:
    body = b'{"predictions": [{"classes": ["sneaker"], "scores": [0.91]}]}'

    with pytest.raises(ImageMarkError) as err:
        mark_predict_response(body, BOTH)
    assert err.value.code == "image_mark_no_image"
    assert mark_predict_response(body, BOTH, require_image=False).body == body


@pytest.mark.parametrize(
    "body, code",
    [
        (b'{"predictions": [{"b64": "not base64!"}]}', "image_b64_invalid"),
        (b'{"predictions": [{"b64": "%s"}]}' % _b64(b"GIF89a....").encode(), "image_unsupported"),
        (b'{"predictions": [{"b64": "%s"}]}' % _b64(_SMALL_PNG[:-5]).encode(), "image_malformed"),
        (b"not json", "response_malformed"),
        (b"[1, 2]", "response_malformed"),
        (b"\xff\xfe{}", "response_malformed"),
        (b"[" * 100_000, "response_malformed"),
    ],
)
def test_bad_responses_raise_the_typed_error(body: bytes, code: str) -> None:
    with pytest.raises(ImageMarkError) as err:
        mark_predict_response(body, BOTH)
    assert err.value.code == code


def test_duplicate_keys_are_refused_not_guessed(png: bytes) -> None:
    image = _b64(png)
    body = '{"predictions": [{"image_bytes": {"b64": "IMAGE"}, "a": "1", "a": "2"}]}'
    body = body.replace("IMAGE", image).encode()

    with pytest.raises(ImageMarkError, match="duplicate keys"):
        mark_predict_response(body, BOTH)


def test_marks_module_does_not_import_aiohttp() -> None:
    code = "import sys, gateway.marks; sys.exit('aiohttp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    assert set(marks.__all__) <= set(dir(marks))
