"""Property-based fuzzing with Hypothesis: generated broken images, CSV/JSONL rows, texts and
damaged run files are thrown at the loaders, and only headstart's own errors (subclasses of
HeadstartError in exceptions.py) may come out. Few examples each, no deadline: a few seconds.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import hostile as H
from headstart import api
from headstart.modalities import load_dataset
from headstart.data.images import open_image, read_checked
from headstart.exceptions import HeadstartError
from headstart.safeio import safe_name
from headstart.training.features import FeatureCache
from headstart.training.rundir import RunWriter

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
SEEDS = [H.png_bytes((20, 16)), H.png_bytes((9, 9), format="JPEG"), H.animated_gif(),
         H.png_bytes((12, 8), format="BMP"), H.png_bytes((10, 10), format="WEBP"),
         H.cmyk_jpeg(), H.palette_png_with_transparency(), H.png_bytes(mode="I;16"),
         H.exif_orientation_jpeg(6)]


@st.composite
def damaged(draw, seeds=SEEDS):
    """Bytes of a real file, then cut, overwritten, spliced or replaced."""
    data = bytearray(draw(st.sampled_from(seeds)))
    kind = draw(st.sampled_from(["cut", "flip", "splice", "random", "empty", "header"]))
    if kind == "cut":
        data = data[:draw(st.integers(0, len(data)))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 20))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "splice":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=64))
    elif kind == "random":
        data = bytearray(draw(st.binary(max_size=2048)))
    elif kind == "empty":
        data = bytearray()
    else:  # a real header followed by junk
        data = data[:draw(st.integers(8, 40))] + draw(st.binary(max_size=256))
    return bytes(data)


def only_ours(fn, *args, **kw):
    """Call fn: success or a HeadstartError pass; anything else fails the test."""
    try:
        return fn(*args, **kw)
    except HeadstartError:
        return None


@pytest.fixture(scope="module")
def scratch():
    d = Path(tempfile.mkdtemp(prefix="headstart-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@FUZZ
@given(data=damaged(), ext=st.sampled_from([".png", ".jpg", ".gif", ".webp", ".bmp"]))
def test_broken_images_raise_only_image_errors(data, ext, scratch):
    path = H.write(scratch / f"img{ext}", data)
    only_ours(read_checked, path)
    img = only_ours(open_image, path, max_pixels=4_000_000)
    if img is not None:
        assert img.mode == "RGB" and img.size[0] > 0


cells = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


@FUZZ
@given(rows=st.lists(st.lists(cells, max_size=4), max_size=8),
       header=st.sampled_from(["path,label", "filename,class", "", "a,b", "label,path"]),
       raw=st.binary(max_size=64))
def test_image_csv_rows_raise_only_data_errors(rows, header, raw, scratch):
    (scratch / "a.png").write_bytes(SEEDS[0])
    text = "\n".join([header] * bool(header) + [",".join(r) for r in rows])
    path = H.write(scratch / "images.csv", text.encode("utf-8", "surrogatepass") + raw)
    only_ours(load_dataset, path, modality="image")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | cells,
                           lambda v: st.lists(v, max_size=3) | st.dictionaries(cells, v,
                                                                               max_size=3),
                           max_leaves=8)


@FUZZ
@given(objs=st.lists(st.one_of(st.fixed_dictionaries({"text": json_values,
                                                      "label": json_values}), json_values),
                     max_size=6),
       junk=st.sampled_from(["", "{", "[[[", "\x00", "\ufeff", "null"]))
def test_jsonl_rows_raise_only_data_errors(objs, junk, scratch):
    lines = [json.dumps(o) for o in objs] + [junk]
    path = H.write(scratch / "t.jsonl", "\n".join(lines))
    only_ours(load_dataset, path, modality="text")


@FUZZ
@given(rows=st.lists(st.tuples(cells, cells), max_size=8),
       header=st.sampled_from(["text,label", "text,text,label", "label", "", "sentence,y"]),
       encoding=st.sampled_from(["utf-8", "utf-16", "latin-1", "cp1252"]),
       ext=st.sampled_from([".csv", ".tsv"]))
def test_text_tables_raise_only_data_errors(rows, header, encoding, ext, scratch):
    sep = "\t" if ext == ".tsv" else ","
    text = "\n".join([header.replace(",", sep)] * bool(header) + [sep.join(r) for r in rows])
    try:
        raw = text.encode(encoding)
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "replace")
    only_ours(load_dataset, H.write(scratch / f"t{ext}", raw), modality="text")


@FUZZ
@given(texts=st.lists(st.text(max_size=200), min_size=1, max_size=4))
def test_texts_to_predict_raise_only_our_errors(texts, tiny_text_run):
    trained = api.load(tiny_text_run)
    results = only_ours(api.predict_images, trained, texts, top=2)
    if results is not None:
        assert len(results) == len(texts)


RUN_FILES = ["config.yaml", "labels.json", "metrics.json", "model.safetensors"]


@FUZZ
@given(name=st.sampled_from(RUN_FILES), data=st.data())
def test_damaged_run_files_raise_only_our_errors(name, data, tiny_runs, scratch):
    run = scratch / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(tiny_runs["linear_probe"], run)
    original = (run / name).read_bytes()
    if name.endswith((".json", ".yaml")) and data.draw(st.booleans()):
        value = data.draw(json_values)
        new = (json.dumps(value) if name.endswith(".json") else
               data.draw(st.sampled_from(["", "!!python/name:os.system", "&a [*a]", "- "]))
               + json.dumps(value)).encode()
    else:
        new = data.draw(damaged(seeds=[original]))
    assume(new != original)
    (run / name).write_bytes(new)
    only_ours(api.load, run)


@FUZZ
@given(data=damaged(seeds=[b"PK\x03\x04" + bytes(200), b"\x80\x04\x95" + bytes(50)]))
def test_damaged_checkpoints_raise_only_run_errors(data, scratch):
    out = scratch / "runs" / "r"
    shutil.rmtree(scratch / "runs", ignore_errors=True)
    with RunWriter(out) as w:
        w.open({"a": 1})
        (w.partial / "checkpoint.pt").write_bytes(data)
    with RunWriter(out) as w:
        only_ours(w.open, {"a": 1})


@FUZZ
@given(data=damaged(seeds=[b"SQLite format 3\x00" + bytes(4080)]))
def test_a_damaged_feature_cache_never_raises(data, scratch):
    path = scratch / "cache" / "features.sqlite"
    shutil.rmtree(path.parent, ignore_errors=True)
    H.write(path, data)
    cache = FeatureCache(path)
    cache.put_many("k", [("h", 0, [1.0, 2.0])])
    assert list(cache.get_many("k", ["h"], 0)["h"]) == [1.0, 2.0]
    cache.close()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(name=st.text(max_size=300))
def test_safe_names_never_leave_their_folder(name):
    safe = safe_name(name)
    assert safe and safe not in (".", "..") and "/" not in safe and "\\" not in safe
    assert "\x00" not in safe and not safe.startswith(".") and len(safe.encode()) <= 100
    assert Path("root", safe).parent == Path("root")
