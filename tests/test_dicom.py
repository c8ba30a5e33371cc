"Edge cases of brain_tumor_cls.dicom: odd but valid encodings, damaged files, refusals before decoding, safe writing."
import ast
import io
import re
import os
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder

import brain_tumor_cls.dicom as dicom
from brain_tumor_cls.dicom import (DICOM_REASONS, DicomError, dicom_bytes, dicom_header, hash_identifier, is_dicom,
                                   read_dicom, write_dicom)
from brain_tumor_cls.dicom import _edit_dicom


@pytest.fixture(scope="module")
def picture():
    "A 48x64 grey picture with all 256 levels (g) and its 12-bit version (m = round(4095 g / 255))."
    y, x = np.mgrid[:48, :64]
    g = ((x * 4 + y * 3) % 256).astype(np.uint8)
    g[0, 0], g[0, 1] = 0, 255
    return g, np.round(g * (4095 / 255)).astype(np.uint16)


def reason(path, **kw):
    "The reason `read_dicom` gives for `path`, or 'ok'."
    try: read_dicom(path, **kw); return "ok"
    except DicomError as e:
        assert e.reason in DICOM_REASONS and e.message
        return e.reason


def put(tmp_path, name, data:bytes) -> Path:
    p = tmp_path / name; p.write_bytes(data); return p


def with_pixels(ds:pydicom.Dataset) -> bytes:
    buf = io.BytesIO(); ds.save_as(buf, enforce_file_format=True); return buf.getvalue()


# --- what counts as DICOM ---------------------------------------------------------------------------------------

def test_preamble_less_data_set_needs_a_dicom_suffix(tmp_path, picture):
    g, _ = picture
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(g, bits=8)))
    bare = pydicom.Dataset(ds)   # a plain data set: no preamble, no file meta
    buf = io.BytesIO(); bare.save_as(buf, implicit_vr=True, little_endian=True)   # bare data set: no preamble, no meta
    raw = buf.getvalue()
    assert raw[:2] == b"\x08\x00" and raw[128:132] != b"DICM"
    ok, nosuffix = put(tmp_path, "old.DCM", raw), put(tmp_path, "old", raw)
    assert is_dicom(ok) and not is_dicom(nosuffix)
    np.testing.assert_array_equal(read_dicom(ok), g)
    assert dicom_header(ok)["transfer_syntax"] == "1.2.840.10008.1.2"   # implicit VR little endian, as read
    assert reason(nosuffix) == "not_an_image"


@pytest.mark.parametrize("name,data", [("empty.dcm", b""), ("png.dcm", b"\x89PNG\r\n\x1a\n" + bytes(300)),
                                       ("text.dicom", b"patient: nobody\n" * 20), ("short.dcm", b"\x08\x00")])
def test_non_dicom_bytes(tmp_path, name, data):
    p = put(tmp_path, name, data)
    assert not is_dicom(p)
    assert reason(p) == "not_an_image"
    with pytest.raises(DicomError, match="not a DICOM file"): dicom_header(p)


def test_missing_file_and_folder_are_unreadable(tmp_path):
    (tmp_path / "folder.dcm").mkdir()
    for p in (tmp_path / "missing.dcm", tmp_path / "folder.dcm"):
        assert not is_dicom(p) and reason(p) == "unreadable"


# --- header -------------------------------------------------------------------------------------------------------

def test_header_never_needs_the_pixels(tmp_path, picture):
    g, m = picture
    good = dicom_bytes(m, bits=12, patient_id="P1")
    truncated = put(tmp_path, "t.dcm", good[:-500])
    bomb = put(tmp_path, "b.dcm", _edit_dicom(good, Rows=60000, Columns=60000))
    assert dicom_header(truncated)["width"] == 64 and dicom_header(truncated)["patient_id"] == "P1"
    assert (dicom_header(bomb)["width"], dicom_header(bomb)["height"]) == (60000, 60000)


def test_header_identifiers_absent_are_empty(tmp_path, picture):
    _, m = picture
    p = put(tmp_path, "anon.dcm", _edit_dicom(dicom_bytes(m, bits=12, patient_id="P1"),
                                              PatientID=None, StudyInstanceUID=None, SeriesInstanceUID=None))
    h = dicom_header(p)
    assert (h["patient_id"], h["study_uid"], h["series_uid"]) == ("", "", "")
    assert read_dicom(p).shape == m.shape


def test_uids_follow_the_patient(picture):
    _, m = picture
    h = [pydicom.dcmread(io.BytesIO(dicom_bytes(m, bits=12, patient_id=pid))) for pid in ("A", "A", "B")]
    assert h[0].StudyInstanceUID == h[1].StudyInstanceUID != h[2].StudyInstanceUID
    assert h[0].SeriesInstanceUID != h[2].SeriesInstanceUID
    assert all(pydicom.uid.UID(d.StudyInstanceUID).is_valid for d in h)


# --- rendering: encodings beyond the notebook's six -----------------------------------------------------------------

@pytest.mark.parametrize("vr", ["US", "OW"])
def test_voi_lut_sequence_wins_over_the_window(tmp_path, picture, vr):
    g, m = picture
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(m, bits=12, window=(100, 10))))   # a window that would clip almost all
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, 0, 8]   # 12 bits in, 8 bits out: pydicom 3.0's apply_voi alone wraps indices > 255
    table = np.round(np.arange(4096) * (255 / 4095)).astype(np.uint16)
    item.add_new("LUTData", vr, table.tolist() if vr == "US" else table.astype("<u2").tobytes())
    ds.VOILUTSequence = [item]
    assert np.abs(read_dicom(put(tmp_path, "lut.dcm", with_pixels(ds))).astype(int) - g).max() <= 1


def test_negative_slope_is_applied_before_min_max(tmp_path, picture):
    g, m = picture
    p = write_dicom(tmp_path / "neg.dcm", m, bits=12, slope=-1.0, intercept=4095.0)
    np.testing.assert_array_equal(read_dicom(p), 255 - g)


def test_first_of_several_windows_is_used(tmp_path, picture):
    g, m = picture
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(m, bits=12)))
    ds.WindowCenter, ds.WindowWidth = [2048, 100], [4096, 10]
    np.testing.assert_array_equal(read_dicom(put(tmp_path, "w2.dcm", with_pixels(ds))), g)


def test_sigmoid_window_keeps_the_order_of_grey_levels(tmp_path, picture):
    g, m = picture
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(m, bits=12, window=(2048, 1500))))
    ds.VOILUTFunction = "SIGMOID"
    r = read_dicom(put(tmp_path, "sig.dcm", with_pixels(ds))).ravel()
    order = np.argsort(g.ravel(), kind="stable")
    assert np.all(np.diff(r[order].astype(int)) >= 0)
    assert r[order][0] < 30 and r[order][-1] > 225


def test_declared_single_frame_is_read(tmp_path, picture):
    g, m = picture
    p = put(tmp_path, "one.dcm", _edit_dicom(dicom_bytes(m, bits=12), NumberOfFrames=1))
    np.testing.assert_array_equal(read_dicom(p), g)


def test_deflated_data_set_is_read(tmp_path, picture):
    g, m = picture
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(m, bits=12)))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    p = put(tmp_path, "deflated.dcm", with_pixels(ds))
    assert dicom_header(p)["compressed"] is False
    np.testing.assert_array_equal(read_dicom(p), g)


def test_colour_dicom_becomes_pillow_grey(tmp_path, picture):
    g, _ = picture
    rgb = np.stack([g, 255 - g, g // 2], -1).astype(np.uint8)
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(g, bits=8)))
    ds.set_pixel_data(rgb, "RGB", 8, generate_instance_uid=False)
    ours = read_dicom(put(tmp_path, "rgb.dcm", with_pixels(ds))).astype(int)
    assert np.abs(ours - np.asarray(Image.fromarray(rgb).convert("L"), dtype=int)).max() <= 1


# --- refusals and damage ------------------------------------------------------------------------------------------

def test_bomb_is_refused_without_decoding(tmp_path, monkeypatch, picture):
    _, m = picture
    good = dicom_bytes(m, bits=12)
    def never(ds): raise AssertionError("pixel data decoded")
    monkeypatch.setattr(dicom, "_decode", never)
    assert reason(put(tmp_path, "b.dcm", _edit_dicom(good, Rows=65535, Columns=65535))) == "decompression_bomb"
    frames = put(tmp_path, "f.dcm", _edit_dicom(good, NumberOfFrames=20))
    with pytest.raises(DicomError, match=r"48x64x20 frames|64x48x20 frames") as e: read_dicom(frames, max_pixels=m.size * 10)
    assert e.value.reason == "decompression_bomb"   # frames count towards the limit, and the bomb check comes first
    assert reason(put(tmp_path, "g.dcm", good), max_pixels=m.size - 1) == "decompression_bomb"


def test_max_pixels_is_inclusive(tmp_path, picture):
    _, m = picture
    assert reason(write_dicom(tmp_path / "g.dcm", m, bits=12), max_pixels=m.size) == "ok"


def test_undecodable_transfer_syntaxes(tmp_path, picture):
    _, m = picture
    fake = encapsulate([b"\xff\xd8\xff\xe0" + bytes(60)])
    mpeg = put(tmp_path, "mpeg.dcm", _edit_dicom(dicom_bytes(m, bits=12), transfer_syntax=pydicom.uid.MPEG2MPML, PixelData=fake))
    jls = _edit_dicom(dicom_bytes(m, bits=12), transfer_syntax=pydicom.uid.JPEGLSLossless, PixelData=fake)
    unknown = put(tmp_path, "unknown.dcm", jls.replace(b"1.2.840.10008.1.2.4.80", b"1.2.840.10008.1.2.4.99"))
    for p, words in [(mpeg, "MPEG2 Main Profile"), (unknown, "unknown transfer syntax (1.2.840.10008.1.2.4.99)")]:
        assert dicom_header(p)["compressed"] is True
        with pytest.raises(DicomError, match=r"pydicom has no decoder") as e: read_dicom(p)
        assert e.value.reason == "unsupported_dicom_compression" and words in e.value.message


def test_available_decoder_with_damaged_codestream_is_corrupt(tmp_path, picture):
    g, _ = picture
    if not get_decoder(pydicom.uid.JPEGBaseline8Bit).is_available: pytest.skip("no JPEG baseline decoder (Pillow)")
    p = put(tmp_path, "jpeg.dcm", _edit_dicom(dicom_bytes(g, bits=8), transfer_syntax=pydicom.uid.JPEGBaseline8Bit,
                                              PixelData=encapsulate([b"\xff\xd8\xff\xe0" + bytes(60)])))
    with pytest.raises(DicomError, match="pixel data cannot be decoded") as e: read_dicom(p)
    assert e.value.reason == "corrupt"


def garbled_frames(data:bytes) -> bytes:
    "`data` with NumberOfFrames (IS, '2 ') overwritten by 'x ' (pydicom refuses to write an invalid IS itself)."
    data = _edit_dicom(data, NumberOfFrames=2)
    elem = b"\x28\x00\x08\x00IS\x02\x002 "
    assert data.count(elem) == 1
    return data.replace(elem, elem[:-2] + b"x ")


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
@pytest.mark.parametrize("change,words", [(dict(PhotometricInterpretation="CMYK"), "'CMYK' is missing or unsupported"),
                                          (dict(Rows=None), "Rows/Columns missing"),
                                          ("frames", "inconsistent header")])
def test_damaged_headers_are_corrupt(tmp_path, picture, change, words):
    _, m = picture
    good = dicom_bytes(m, bits=12)
    p = put(tmp_path, "h.dcm", garbled_frames(good) if change == "frames" else _edit_dicom(good, **change))
    with pytest.raises(DicomError, match=words) as e: read_dicom(p)
    assert e.value.reason == "corrupt"


def test_float_pixel_data_is_not_an_image(tmp_path, picture):
    _, m = picture
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(m, bits=12)))
    del ds.PixelData
    ds.FloatPixelData = m.astype(np.float32).tobytes()
    with pytest.raises(DicomError, match="float pixel data") as e: read_dicom(put(tmp_path, "float.dcm", with_pixels(ds)))
    assert e.value.reason == "not_an_image"


@pytest.mark.parametrize("cut", [200, 420, 2000])
def test_file_cut_anywhere_never_crashes(tmp_path, picture, cut):
    _, m = picture
    p = put(tmp_path, "cut.dcm", dicom_bytes(m, bits=12)[:cut])
    assert reason(p) == "corrupt"


# --- writing --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,words", [(dict(photometric="RGB"), "expected 'MONOCHROME2' or 'MONOCHROME1'"),
                                      (dict(bits=7), "8 to 16 bits"), (dict(bits=17), "8 to 16 bits"),
                                      (dict(bits=8), "do not fit 8-bit unsigned storage (0..255)"),
                                      (dict(signed=True, bits=12), "do not fit 12-bit signed storage (-2048..2047)")])
def test_write_dicom_refuses_what_it_cannot_store(tmp_path, picture, kw, words):
    _, m = picture
    with pytest.raises(ValueError, match=re.escape(words)): write_dicom(tmp_path / "x.dcm", m, **kw)
    assert not any(tmp_path.iterdir())


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, picture):
    g, m = picture
    p = write_dicom(tmp_path / "a.dcm", g, bits=8)
    before = p.read_bytes()
    def broken(src, dst): raise OSError("disk full")
    monkeypatch.setattr(dicom.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"): write_dicom(p, m, bits=12, overwrite=True)
    assert p.read_bytes() == before and [f.name for f in tmp_path.iterdir()] == ["a.dcm"]


def test_written_file_has_umask_permissions(tmp_path, picture):
    g, _ = picture
    old = os.umask(0o022)
    try: p = write_dicom(tmp_path / "perm.dcm", g, bits=8)
    finally: os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644


# --- identifiers and the floor-level contract -------------------------------------------------------------------------

def test_hash_identifier_of_numbers_and_strings_agree():
    assert hash_identifier(12345) == hash_identifier("12345") != ""
    assert hash_identifier("12345", salt="s1") != hash_identifier("12345", salt="s2")


def test_module_imports_only_numpy_pydicom_and_the_standard_library():
    tree = ast.parse(Path(dicom.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert names - set(sys.stdlib_module_names) - {"__future__"} == {"numpy", "pydicom"}
