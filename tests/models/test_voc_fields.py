"""VOC annotation fields: the spellings real tools write are read, every malformed field is a
DatasetError naming the file, the object and the field (issue 13, kind 5)."""

from __future__ import annotations

import math
import xml.sax.saxutils as su
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convforge.errors import DatasetError
from convforge.models.data.voc import FLAG_VALUES, VOC_CLASSES, parse_voc_xml


def _index(name: str) -> int | None:
    return VOC_CLASSES.index(name) if name in VOC_CLASSES else None


def _write(tmp: Path, obj: str, size: str = "<size><width>100</width><height>80</height></size>") -> Path:
    path = tmp / "ann.xml"
    path.write_text(f"<annotation>{size}{obj}</annotation>")
    return path


def _obj(name="dog", box=("10", "20", "30", "40"), difficult: str | None = "0") -> str:
    tags = "".join(f"<{k}>{su.escape(v)}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))
    diff = "" if difficult is None else f"<difficult>{su.escape(difficult)}</difficult>"
    return f"<object><name>{su.escape(name)}</name>{diff}<bndbox>{tags}</bndbox></object>"


@pytest.mark.parametrize("text,want", [("0", False), ("1", True), ("true", True), ("false", False), ("True", True),
                                       (" FALSE ", False), ("", False), (None, False)])
def test_difficult_spellings_real_tools_write(tmp_path, text, want):
    _, _, _, _, difficult = parse_voc_xml(_write(tmp_path, _obj(difficult=text)), _index)
    assert difficult.tolist() == [want]


@pytest.mark.parametrize(
    "obj,size,match",
    [
        (_obj(difficult="yes please"), None, r"object 0 \('dog'\): field <difficult> is 'yes please'; expected one of"),
        (_obj(difficult="2"), None, r"field <difficult> is '2'"),
        (_obj(box=("10", "abc", "30", "40")), None, r"object 0 \('dog'\): field <bndbox><ymin> is 'abc', not a number"),
        (_obj(box=("10", "20", "nan", "40")), None, r"field <bndbox><xmax> is 'nan', not a finite number"),
        (_obj(box=("10", "20", " ", "40")), None, r"field <bndbox><xmax> is missing"),
        (_obj(box=("50", "20", "30", "40")), None, r"field <bndbox> is inverted \(xmin 50 > xmax 30"),
        (_obj(name="unicorn"), None, r"object 0 \('unicorn'\): unknown object class 'unicorn'"),
        (_obj(name=""), None, r"object 0: field <name> is missing or empty"),
        ("<object><name>dog</name></object>", None, r"field <bndbox> is missing"),
        (_obj(), "<size><width>wide</width><height>80</height></size>", r"field <size><width> is 'wide', not a number"),
        (_obj(), "<size><width>-5</width><height>80</height></size>", r"field <size><width> is '-5'"),
        (_obj(), "<size><width>0</width><height>0</height></size>", r"no usable <size> .* and no image file"),
    ],
)
def test_malformed_fields_name_file_object_and_field(tmp_path, obj, size, match):
    path = _write(tmp_path, obj, size) if size else _write(tmp_path, obj)
    with pytest.raises(DatasetError, match=match) as info:
        parse_voc_xml(path, _index)
    assert str(path) in str(info.value)


def test_issue_example_difficult_true_and_its_siblings_through_the_loader(tmp_path):
    path = _write(tmp_path, _obj(difficult="true") + _obj(name="person", difficult="1"))
    width, height, boxes, labels, difficult = parse_voc_xml(path, _index)
    assert (width, height) == (100, 80) and difficult.tolist() == [True, True]
    assert boxes.tolist()[0] == [9.0, 19.0, 30.0, 40.0]


_numbers = st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr) | st.integers(-50, 500).map(str)
_text = st.text(alphabet=st.characters(codec="ascii", exclude_categories=("Cc", "Cs")), max_size=6)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(box=st.tuples(_numbers | _text, _numbers | _text, _numbers | _text, _numbers | _text),
       difficult=st.sampled_from(sorted(FLAG_VALUES)) | _text)
def test_every_field_value_is_read_exactly_or_refused_by_name(tmp_path, box, difficult):
    path = _write(tmp_path, _obj(box=box, difficult=difficult))

    def num(t: str) -> float | None:
        try:
            v = float(t)
        except ValueError:
            return None
        return v if math.isfinite(v) else None

    values = [num(t) if t.strip() else None for t in box]
    flag = (difficult.strip().lower() or "0") in FLAG_VALUES
    valid = all(v is not None for v in values) and flag and values[0] <= values[2] and values[1] <= values[3]
    if valid:
        _, _, boxes, _, diff = parse_voc_xml(path, _index)
        import numpy as np

        assert boxes.tolist() == np.float32([values[0] - 1, values[1] - 1, values[2], values[3]]).reshape(1, 4).tolist()
        assert diff.tolist() == [FLAG_VALUES[difficult.strip().lower() or "0"]]
    else:
        with pytest.raises(DatasetError, match=r"object 0 \('dog'\): field <(bndbox|difficult)"):
            parse_voc_xml(path, _index)
