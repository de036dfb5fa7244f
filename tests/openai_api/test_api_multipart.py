"""The multipart/form-data reader used for transcription uploads."""

from __future__ import annotations

import pytest

from wyoming_openai.openai_api.multipart import MultipartError, boundary, disposition_params, parse

CT = "multipart/form-data; boundary=XyZ"


def body(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    return preamble + b"".join(b"--XyZ\r\n" + part + b"\r\n" for part in parts) + b"--XyZ--\r\n" + epilogue


def test_fields_and_a_binary_file_with_crlf_and_dashes_inside() -> None:
    data = b"\r\n--XyZnot-a-boundary\r\n\x00\xff"
    parts = parse(
        body(
            b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1',
            b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n' + data,
            b'Content-Disposition: form-data; name="include[]"\r\n\r\n',
            preamble=b"ignored preamble\r\n",
            epilogue=b"ignored epilogue",
        ),
        CT,
    )
    assert [(p.name, p.data, p.filename) for p in parts] == [
        ("model", b"whisper-1", None), ("file", data, "a.wav"), ("include[]", b"", None),
    ]  # fmt: skip


def test_part_without_headers_has_no_name() -> None:
    assert parse(body(b"\r\nloose"), CT)[0].name == ""


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (CT, b"XyZ"),
        ('multipart/form-data; BOUNDARY="a b;c"', b"a b;c"),
        ("multipart/form-data; charset=x; boundary=q1", b"q1"),
    ],
)
def test_boundary(content_type: str, expected: bytes) -> None:
    assert boundary(content_type) == expected


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ('form-data; name="file"; filename="a.wav"', "file"),
        ('form-data; filename="x; name=y.wav"; name="model"', "model"),
        ("form-data; name=stream", "stream"),
        ('form-data; name="a\\"b"', 'a"b'),
        ('form-data; filename="x"', None),
        ('form-data; NAME="include[]"', "include[]"),
    ],
)
def test_disposition_names(disposition: str, name: str | None) -> None:
    assert disposition_params(disposition).get("name") == name


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"no parts at all", CT),
        (b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nnever closed", CT),
        (b"--XyZ\r\nContent-Disposition: form-data; name=a", CT),
        (b"--XyZjunk\r\n\r\nx\r\n--XyZ--", CT),
        (body(b"\r\nx"), "multipart/form-data"),
    ],
)
def test_malformed_bodies(data: bytes, content_type: str) -> None:
    with pytest.raises(MultipartError):
        parse(data, content_type)
