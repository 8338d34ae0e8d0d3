"""Marking every image in a TF Serving predict response; every other byte is kept.

Images are the `{"b64": ...}` values under `predictions` or `outputs` whose bytes are PNG,
JPEG or WebP; the body is edited in place, never re-serialised (see `mark_predict_response`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence

from gateway.jsonpath import json_path_child
from gateway.marks.container import describe_unsupported, detect_format, is_unsupported_image
from gateway.marks.image import apply_marks
from gateway.marks.label import draw_explicit_label
from gateway.marks.plan import ExplicitLabel, ImageMarkError, Mark, MarkedResponse

__all__ = ["mark_predict_response"]


def mark_predict_response(
    body: bytes, marks: Sequence[Mark], *, require_image: bool = True
) -> MarkedResponse:
    """Mark every image in a TF Serving predict response; everything else keeps its bytes.

    Images are the `{"b64": ...}` values under `predictions` (row format, e.g.
    `predictions[0].image_bytes.b64`) or `outputs` (columnar) whose bytes are PNG, JPEG or
    WebP. Other binary outputs are left alone; an image in a format that cannot carry our
    marks raises. The body is edited in place rather than re-serialised, because TF
    Serving's float layout and its bare `NaN` tokens must reach the client unchanged.
    With `require_image`, a response without any image raises: a mark obligation that
    cannot be met fails closed.
    """
    try:
        text = body.decode("utf-8")
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ImageMarkError("response_malformed", f"predict response is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ImageMarkError("response_malformed", "predict response is not a JSON object")

    replacements: dict[int, tuple[str, str]] = {}  # id() of a `{"b64": ...}` -> (old, new)
    paths: list[str] = []
    marked_cache: dict[str, str] = {}
    for root in ("predictions", "outputs"):
        if root not in document:
            continue
        for path, holder in _b64_objects(document[root], root):
            old = holder["b64"]
            assert isinstance(old, str)
            new = marked_cache.get(old)
            if new is None:
                new = _mark_b64(old, path, marks)
                if new is None:
                    continue
                marked_cache[old] = new
            replacements[id(holder)] = (old, new)
            paths.append(f"{path}.b64")
    if not paths:
        if require_image:
            raise ImageMarkError(
                "image_mark_no_image", "the predict response holds no image that can be marked"
            )
        return MarkedResponse(body, ())
    return MarkedResponse(_splice_strings(body, document, replacements), tuple(paths))


def _mark_b64(value: str, path: str, marks: Sequence[Mark]) -> str | None:
    """The marked image as base64, or None when the bytes are not an image at all."""
    try:
        # strict_mode is the C-level check; b64decode(validate=True) runs a slow regex.
        image = binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):
        raise ImageMarkError("image_b64_invalid", f"`{path}.b64` is not valid base64") from None
    if detect_format(image) is None:
        if is_unsupported_image(image):
            raise ImageMarkError(
                "image_unsupported", f"`{path}.b64`: {describe_unsupported(image)}"
            )
        return None
    try:
        for mark in marks:
            if isinstance(mark, ExplicitLabel):
                image = draw_explicit_label(image, mark)
        marked = apply_marks(image, marks)
    except ImageMarkError as exc:
        raise ImageMarkError(exc.code, f"`{path}.b64`: {exc.message}") from None
    return base64.b64encode(marked).decode("ascii")


def _b64_objects(value: object, path: str) -> Iterator[tuple[str, dict[str, object]]]:
    """TF Serving binary values (`{"b64": "..."}`) under `value`, in document order."""
    stack: list[tuple[str, object]] = [(path, value)]
    while stack:
        here, item = stack.pop()
        if isinstance(item, dict):
            if len(item) == 1 and isinstance(item.get("b64"), str):
                yield here, item
                continue
            stack.extend((json_path_child(here, k), v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((json_path_child(here, i), v) for i, v in reversed(list(enumerate(item))))


def _strings_in_order(
    document: object, replacements: dict[int, tuple[str, str]]
) -> Iterator[tuple[str, str] | None]:
    """For every JSON string token in document order: (old, new) to replace it, or None."""
    stack: list[object] = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield None
        elif isinstance(item, dict):
            new = replacements.get(id(item))
            if new is not None:
                yield None  # the key "b64"
                yield new
                continue
            for key, child in reversed(item.items()):
                stack.append(child)
                stack.append(key)
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _string_tokens(body: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of every JSON string token's contents; quotes occur only in strings."""
    pos = body.find(b'"')
    while pos != -1:
        end = body.find(b'"', pos + 1)
        while end != -1:
            before = end - 1
            while body[before] == 0x5C:  # stops at the opening quote at the latest
                before -= 1
            if (end - 1 - before) % 2 == 0:  # an even run of backslashes escapes nothing
                break
            end = body.find(b'"', end + 1)
        if end == -1:
            return
        yield pos + 1, end
        pos = body.find(b'"', end + 1)


def _splice_strings(
    body: bytes, document: object, replacements: dict[int, tuple[str, str]]
) -> bytes:
    """Replace the marked b64 string tokens in the original bytes, leaving the rest as is.

    The parsed document and the raw token stream are walked together; if they disagree
    (which only duplicate keys can cause) the response is refused rather than guessed at.
    """
    out: list[bytes] = []
    copied = 0
    tokens = _string_tokens(body)
    for change in _strings_in_order(document, replacements):
        token = next(tokens, None)
        if token is None:
            break
        if change is not None:
            start, end = token
            old, new = change
            raw = body[start:end]
            if raw != old.encode("ascii") and json.loads(b'"' + raw + b'"') != old:
                break
            out += [body[copied:start], new.encode("ascii")]
            copied = end
    else:
        if next(tokens, None) is None:
            out.append(body[copied:])
            return b"".join(out)
    raise ImageMarkError(
        "response_malformed", "predict response has duplicate keys; refusing to rewrite it"
    )
