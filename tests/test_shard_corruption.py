"""Corrupted and truncated shards are detected, named, and counted in skip mode.

CI-sized version of ``python -m benchmarks.shard_corruption`` (which tries every byte and
every length; figures in RELIABILITY.md): here a stride over the whole shard plus every
byte of one tar header in the middle of the shard, where plain tarfile-based readers lose
the rest of the shard without an error; and a stride over the shards of the layouts ``ndf
convert`` writes (compact ``.tar.gz``, Parquet), through every reader of each.
"""

from __future__ import annotations

import numpy as np
import pytest
import webdataset as wds
from ndf_datasets.integrations.webdataset import (
    NDFDecodeError,
    NDFWebDataset,
    SkipCounter,
    ndf_decoder,
    ndf_samples,
)

import ndf_datasets as ndf
from benchmarks.shard_corruption import CLEAN_SHA256, READERS, Tally, classify, make_shard
from ndf_datasets.codec.errors import NDFShardError
from ndf_datasets.data.tarcheck import VerifiedTarStream


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    path, clean = make_shard(tmp_path_factory.mktemp("shard"), count=3)
    return path, clean, path.read_bytes()


def _middle_header(data: bytes) -> int:
    """Offset of the first tar header block of the second sample: its pax extended header
    when the writer added one (WebDataset's TarWriter does, for the float mtime)."""
    at = data.index(b"00000001.") // 512 * 512
    if at >= 1024 and data[at - 1024 + 156 : at - 1024 + 157] == b"x":
        at -= 1024
    return at


def _campaign(reader: str, shard, tmp_path, positions, lengths) -> tuple[Tally, Tally]:
    path, clean, data = shard
    bad = tmp_path / path.name
    flips, cuts = Tally(), Tally()
    for pos in positions:
        mutated = bytearray(data)
        mutated[pos] ^= 0xFF
        bad.write_bytes(mutated)
        classify(READERS[reader], bad, clean, flips, f"flip at {pos}")
    for n in lengths:
        bad.write_bytes(data[:n])
        classify(READERS[reader], bad, clean, cuts, f"cut at {n}")
    return flips, cuts


@pytest.mark.slow
def test_ndf_webdataset_detects_every_flip_and_truncation(shard, tmp_path):
    path, clean, data = shard
    header = _middle_header(data)
    positions = sorted(set(range(0, len(data), 151)) | set(range(header, header + 512, 7)))
    lengths = sorted(set(range(0, len(data), 149)) | set(range(header - 2, header + 515, 29)))
    flips, cuts = _campaign("ndf-wds", shard, tmp_path, positions, lengths)
    for tally in (flips, cuts):
        assert tally.counts["SILENT"] == 0, tally.silent_examples
        assert tally.counts["error"] > 0 and tally.counts["identical"] > 0  # both outcomes are exercised
        assert tally.errors_naming_shard_member_offset == tally.counts["error"], tally.error_examples


def test_plain_webdataset_loses_samples_silently(shard, tmp_path):
    """The reference: WebDataset's own reader drops the rest of the shard at a bad header."""
    path, clean, data = shard
    flips, cuts = _campaign("wds", shard, tmp_path, [_middle_header(data) + 10], [_middle_header(data)])
    assert flips.counts["SILENT"] == 1 and cuts.counts["SILENT"] == 1


def test_hf_shard_reader_detects_a_bad_header_in_the_middle(shard, tmp_path):
    path, clean, data = shard
    flips, cuts = _campaign("hf", shard, tmp_path, [_middle_header(data) + 10], [_middle_header(data)])
    assert flips.counts["SILENT"] == 0 and cuts.counts["SILENT"] == 0


def test_errors_name_shard_member_and_offset(shard, tmp_path):
    path, clean, data = shard
    header = _middle_header(data)
    bad = tmp_path / path.name
    mutated = bytearray(data)
    mutated[header + 5] ^= 0x01
    bad.write_bytes(mutated)
    with pytest.raises(NDFShardError) as info:
        list(NDFWebDataset(str(bad), shardshuffle=False).map(ndf_samples(ndf_decoder(size=None))))
    err = info.value
    assert err.source == str(bad) and err.offset == header and err.member.startswith("00000000.")
    assert str(bad) in str(err) and f"byte {header}" in str(err) and err.member in str(err)

    ndf_at = data.index(b"NDF\x01", header)  # a flip inside the second sample's .ndf member
    mutated = bytearray(data)
    mutated[ndf_at + 20] ^= 0x01
    bad.write_bytes(mutated)
    with pytest.raises(NDFDecodeError) as info:
        list(NDFWebDataset(str(bad), shardshuffle=False).map(ndf_samples(ndf_decoder(size=None))))
    err = info.value
    assert err.url == str(bad) and err.key == "00000001" and err.member == "ndf" and err.member_offset is not None
    assert isinstance(err.__cause__, ndf.NDFChecksumError) and "00000001.ndf" in str(err)


def test_skip_mode_counts_and_keeps_the_samples_before_the_damage(shard, tmp_path):
    path, clean, data = shard
    bad = tmp_path / path.name
    bad.write_bytes(data[: _middle_header(data)])  # truncated at a member boundary
    counter = SkipCounter(warn=False)
    ds = NDFWebDataset(str(bad), shardshuffle=False, handler=counter, empty_check=False)
    kept = list(ds.map(ndf_samples(ndf_decoder(size=None)), handler=counter))
    assert [s["__key__"] for s in kept] == ["00000000"] and counter.count == 1
    assert "truncated" in counter.errors[0]


def test_cls_member_is_checked_against_the_ndf_header(shard, tmp_path):
    path, clean, data = shard
    cls_at = data.index(b"00000002.cls")
    value_at = data.index(b"2", cls_at // 512 * 512 + 512)  # the .cls member's content: b"2"
    mutated = bytearray(data)
    mutated[value_at] ^= 0x01  # "2" -> "3": a valid label, but not this image's
    bad = tmp_path / path.name
    bad.write_bytes(mutated)
    with pytest.raises(NDFDecodeError, match="contradicts") as info:
        list(NDFWebDataset(str(bad), shardshuffle=False).map(ndf_samples(ndf_decoder(size=None))))
    assert info.value.member == "cls" and info.value.key == "00000002"
    plain = list(wds.WebDataset(str(bad), shardshuffle=False).decode(ndf_decoder(size=None)))
    assert plain[2]["cls"] == 3  # the member-level handler can not cross-check: why ndf_samples is the safe path


def test_verified_stream_passes_a_clean_shard_through_unchanged(shard):
    path, clean, data = shard
    with open(path, "rb") as raw:
        stream = VerifiedTarStream(raw, str(path))
        got = b"".join(iter(lambda: stream.read(777), b""))
    assert got == data and stream.ended and stream.members == 6


def test_hf_rows_refuse_a_cls_that_contradicts_the_ndf_label():
    """The HF shard reader checks .cls (no checksum) against the CRC-protected label in the .ndf."""
    from ndf_datasets.integrations.hf.builder import _example

    from ndf_datasets.codec.errors import NDFFormatError

    blob = ndf.encode(np.full((8, 8, 3), 128, np.uint8), psnr=None, steps=5, label=3)
    assert _example("s/train-000000.tar", "000000", {"ndf": blob, "cls": b"3"})["label"] == 3
    with pytest.raises(NDFFormatError, match="says 4 but the CRC-protected .ndf header says 3") as info:
        _example("s/train-000000.tar", "000000", {"ndf": blob, "cls": b"4"})
    assert "s/train-000000.tar" in str(info.value)
    # a damaged .ndf is left to the image feature's on_error policy, not refused here
    assert _example("s/train-000000.tar", "000000", {"ndf": blob[:-1], "cls": b"4"})["label"] == 4


# ----------------------------------------------------------------------------- the layouts ndf convert writes


@pytest.mark.slow
@pytest.mark.parametrize(
    "layout, reader",
    [("compact", "ndf-wds"), ("compact", "hf"), ("parquet", "hf-parquet"), ("parquet", "hf-parquet-nosha")],
)
def test_every_layout_detects_flips_and_truncations(layout, reader, tmp_path):
    """One-member gzip shards and Parquet shards: nothing silent, every error names shard, member and offset.

    ``hf-parquet`` checks the whole file against the manifest's SHA-256; ``hf-parquet-nosha``
    (``load_dataset("parquet", ...)``-like, no manifest) relies on the page CRCs and the
    record CRCs: footer bytes then may change nothing read ("identical"), never the output.
    """
    import hashlib

    path, clean = make_shard(tmp_path, count=3, layout=layout)
    data = path.read_bytes()
    CLEAN_SHA256[path.name] = hashlib.sha256(data).hexdigest()
    (tmp_path / "mutated").mkdir()
    shard = (path, clean, data)
    flips, cuts = _campaign(reader, shard, tmp_path / "mutated", range(0, len(data), 5), range(0, len(data), 7))
    for tally in (flips, cuts):
        assert tally.counts["SILENT"] == 0, tally.silent_examples
        assert tally.counts["error"] > 0
        assert tally.errors_naming_shard_member_offset == tally.counts["error"], tally.error_examples


def test_gzip_shard_errors_name_shard_member_and_offset(tmp_path):
    """Damage in the deflate data and in the gzip trailer (which tarfile never reads) are both NDFShardErrors."""
    path, clean = make_shard(tmp_path, count=3, layout="compact")
    data = path.read_bytes()
    bad = tmp_path / "bad" / path.name
    bad.parent.mkdir()
    bad.write_bytes(data[:-8] + bytes([data[-8] ^ 0x01]) + data[-7:])  # the CRC-32 of the uncompressed tar
    read = []
    with pytest.raises(NDFShardError, match="CRC-32 mismatch in the gzip trailer") as info:
        for s in NDFWebDataset(str(bad), shardshuffle=False).map(ndf_samples(ndf_decoder(size=None))):
            read.append(s["__key__"])
    err = info.value
    assert err.source == str(bad) and err.offset is not None and err.member == "00000002.ndf"
    assert f"byte {err.offset}" in str(err) and "00000002.ndf" in str(err)
    plain = list(wds.WebDataset(str(bad), shardshuffle=False).decode(ndf_decoder(size=None)))
    assert len(plain) == 3  # tarfile stops at the end-of-archive marker: the trailer is never checked
    with open(bad, "rb") as raw:
        from ndf_datasets.data.tarcheck import open_verified

        stream = open_verified(raw, str(bad))
        with pytest.raises(NDFShardError):
            while stream.read(4096):
                pass


def test_compact_samples_get_their_label_from_the_record(tmp_path):
    path, clean = make_shard(tmp_path, count=3, layout="compact")
    got = list(NDFWebDataset(str(path), shardshuffle=False).map(ndf_samples(ndf_decoder(size=None))).to_tuple("__key__", "cls"))
    assert got == [(key, label) for key, label, _ in clean]
