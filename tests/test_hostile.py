"""Corrupted, truncated and hostile inputs: only NDFError subclasses, never a crash or a hang."""

from __future__ import annotations

import io
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ndf_datasets as ndf
from ndf_datasets.codec import format as fmt
from ndf_datasets.codec.errors import NDFChecksumError, NDFError, NDFFormatError, NDFLimitError, NDFVersionError


def _reseal(body: bytes) -> bytes:
    """Give hand-made bytes a valid CRC, as a deliberate attacker would."""
    return body + struct.pack("<I", zlib.crc32(body))


def test_every_single_byte_change_is_detected(rgb_blob):
    for pos in range(len(rgb_blob)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(rgb_blob)
            bad[pos] ^= flip
            with pytest.raises(NDFError):
                ndf.decode(bytes(bad))


def test_every_truncation_and_extension_is_detected(rgb_blob):
    for n in range(len(rgb_blob)):
        with pytest.raises(NDFError):
            ndf.decode(rgb_blob[:n])
    with pytest.raises(NDFChecksumError):
        ndf.decode(rgb_blob + b"\x00")


def test_error_names_source_and_offset(rgb_blob):
    bad = bytearray(rgb_blob)
    bad[20] ^= 0x10
    with pytest.raises(NDFChecksumError) as info:
        ndf.decode(bytes(bad), source="cifar/cat/0001.ndf")
    assert "cifar/cat/0001.ndf" in str(info.value) and "byte" in str(info.value)


def test_pickle_disguised_as_ndf_is_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    payload = pickle.dumps(Boom())
    with pytest.raises(NDFFormatError, match="pickle"):
        ndf.decode(payload)
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    with pytest.raises(NDFFormatError, match="zip"):
        ndf.decode(buf.getvalue())


def test_newer_version_is_a_version_error(rgb_blob):
    bad = bytearray(rgb_blob)
    bad[3] = 2
    with pytest.raises(NDFVersionError, match="version 2"):
        ndf.decode(_reseal(bytes(bad[:-4])))


def test_unknown_architecture_is_a_version_error(rgb_blob):
    bad = bytearray(rgb_blob[:-4])
    bad[5] = 200
    with pytest.raises(NDFVersionError, match="architecture"):
        ndf.decode(_reseal(bytes(bad)))


def _container(**kw) -> fmt.Container:
    base = dict(kind=fmt.KIND_FIELD, arch=1, colorspace=1, height=8, width=8, config=(3, 1, 0, 8, 1, 0))
    base.update(kw)
    return fmt.Container(**base)


def test_declared_lengths_over_limits_refused_before_allocation():
    head = fmt._HEADER_STRUCT.pack(b"NDF", 1, 1, 1, 0, 1, 8, 8, 0, 0)
    huge = fmt._uvarint(fmt.LIMITS["max_payload_bytes"] + 1)
    with pytest.raises(NDFLimitError, match="payload"):
        fmt.parse(_reseal(head + b"\x00\x00" + huge))


def test_huge_declared_image_refused_before_allocation():
    blob = fmt.write(_container(height=8192, width=8192, config=(1, 1, 0, 8, 1, 0), payload=b"\x00" * 16))
    with pytest.raises(NDFLimitError):
        ndf.decode(blob)


def test_bad_config_is_a_format_error():
    blob = fmt.write(_container(config=(99, 1, 0, 8, 1, 0)))
    with pytest.raises(NDFFormatError, match="levels"):
        ndf.decode(blob)


def test_bad_metadata_is_a_format_error():
    good = fmt.write(_container(metadata={"a": 1}))
    body = bytearray(good[:-4])
    i = body.find(b'{"a":1}')
    body[i : i + 7] = b'{"a":1]'
    with pytest.raises(NDFFormatError, match="JSON"):
        fmt.parse(_reseal(bytes(body)))
    nested = fmt.write(_container(metadata={"a": [[[[1]]]]}))
    assert fmt.parse(nested).metadata == {"a": [[[[1]]]]}


def test_record_kind_is_refused_without_base():
    blob = fmt.write(_container(kind=fmt.KIND_RECORD, base_hash=b"\x01" * 8))
    with pytest.raises(ndf.NDFBaseError, match="0101010101010101"):
        ndf.decode(blob)


def test_base_file_is_not_an_image():
    blob = fmt.write(_container(kind=fmt.KIND_BASE))
    with pytest.raises(NDFFormatError, match="load_base"):
        ndf.decode(blob)


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data):
    try:
        ndf.decode(data)
    except NDFError:
        pass


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.binary(max_size=400),
    config=st.lists(st.integers(-3, 300), min_size=0, max_size=8),
    hw=st.tuples(st.integers(1, 64), st.integers(1, 64)),
    colorspace=st.integers(0, 2),
)
def test_fuzz_valid_checksum_garbage_payload(payload, config, hw, colorspace):
    """Resealed garbage reaches the payload decoder: still only NDFError, or a valid image."""
    blob = fmt.write(_container(payload=payload, config=tuple(config), height=hw[0], width=hw[1], colorspace=colorspace))
    try:
        x = ndf.decode(blob)
    except NDFError:
        return
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutations_of_a_real_file(rgb_blob, data):
    blob = bytearray(rgb_blob)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    resealed = data.draw(st.booleans())
    raw = _reseal(bytes(blob[:-4])) if resealed else bytes(blob)
    try:
        x = ndf.decode(raw)
    except NDFError:
        return
    assert torch.isfinite(x).all()


def test_inspect_never_renders_and_reports_tensors(rgb_blob):
    info = ndf.inspect(rgb_blob)
    assert [t["name"] for t in info["tensors"]][:1] == ["latent0"]
    assert all(1 <= t["bits"] <= 16 for t in info["tensors"])
    assert np.isfinite(info["bpp"])
