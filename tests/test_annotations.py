"""Annotation readers on small tables written here in the two real formats."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fnaf_jax.data.annotations import (
    box_mask,
    by_slice,
    parse_numpy_labels,
    read_annotations,
    read_fastmri_plus,
    read_fnaf_boxes,
)
from fnaf_jax.errors import DataError

FASTMRI_PLUS = """file,slice,study_level,x,y,width,height,label
file1000001,14,No,90,173,35,10,Cartilage - Partial Thickness loss/defect
file1000001,14,No,0,0,5,3,Meniscus Tear
file1001022,0,Yes,,,,,artifact
file1002097,27,No,190,201,18,0,Cartilage - Partial Thickness loss/defect
"""

# NumPy-printed labels and coords, one row with two boxes spread over two lines (quoted).
FNAF_BB = '''filename,slice,numBBs,labels,coords
file1000196,26,1,['Med_Men'],[[176.88335 234.66667 193.80656 210.94229]]
file1002515,18,2,['BML_Med_Tib' 'BML_Med_Fem'],"[[190.03404 242.63678 192.87671 236.31382]
 [ 61.5  70.2  0.   3.4 ]]"
'''


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_fastmri_plus_rows_are_flipped_up_down(tmp_path):
    anns = read_fastmri_plus(write(tmp_path, "knee.csv", FASTMRI_PLUS))
    assert len(anns) == 4
    first, corner, study, flat = anns
    assert first.fname == "file1000001.h5" and first.slice == 14
    # array row = 320 - y - height: 320 - 173 - 10 = 137 .. 147; columns x .. x + width
    assert first.rows == (137, 147) and first.cols == (90, 125)
    # the flipped image's top-left corner is the array's bottom-left corner
    assert corner.rows == (317, 320) and corner.cols == (0, 5)
    assert not study.has_box and study.label == "artifact"
    assert flat.rows == (118, 119) and flat.cols == (190, 208)  # zero height -> 1 row
    mask = box_mask(corner)
    assert mask.shape == (320, 320) and mask.sum() == 15 and mask[319, 0] and not mask[0, 0]
    groups = by_slice(anns)
    assert set(groups) == {("file1000001.h5", 14), ("file1002097.h5", 27)}
    assert [a.label for a in groups[("file1000001.h5", 14)]] == ["Cartilage - Partial Thickness loss/defect", "Meniscus Tear"]


def test_fnaf_boxes_corner_order_orientation_and_1_based_slices(tmp_path):
    anns = read_annotations(write(tmp_path, "bb.csv", FNAF_BB))
    assert [a.label for a in anns] == ["Med_Men", "BML_Med_Tib", "BML_Med_Fem"]
    men = anns[0]
    assert men.fname == "file1000196.h5" and men.slice == 25  # 1-based in the table
    # [x0, x1, y0, y1] on the flipped image, pixel centres inside: columns 177..234,
    # flipped rows 194..210 -> array rows 319-210 .. 319-194
    assert men.cols == (177, 235) and men.rows == (109, 126)
    two = anns[2]
    assert two.slice == 17 and two.cols == (62, 71) and two.rows == (316, 320)
    # independent check of the mask: flip a box drawn on the flipped image back
    flipped = np.zeros((320, 320), bool)
    yy, xx = np.mgrid[0:320, 0:320]
    flipped[(xx >= 61.5) & (xx <= 70.2) & (yy >= 0.0) & (yy <= 3.4)] = True
    np.testing.assert_array_equal(box_mask(two), flipped[::-1])


def test_numpy_labels_are_not_concatenated():
    assert parse_numpy_labels("['BML_Med_Tib' 'BML_Med_Fem']") == ["BML_Med_Tib", "BML_Med_Fem"]
    assert parse_numpy_labels("['Cyst', 'Med_Men']") == ["Cyst", "Med_Men"]


@pytest.mark.parametrize("row, problem", [
    ("file1,3,2,['Cyst'],[[1. 2. 3. 4.]]", "numBBs=2"),
    ("file1,3,1,['Cyst'],[[1. 2. 3.]]", "coords"),
    ("file1,0,1,['Cyst'],[[1. 2. 3. 4.]]", "count from 1"),
    ("file1,3,1,['Cyst'],[[5. 2. 3. 4.]]", "not [x0, x1, y0, y1]"),
])
def test_bad_fnaf_rows_name_file_line_and_problem(tmp_path, row, problem):
    path = write(tmp_path, "bad.csv", "filename,slice,numBBs,labels,coords\n" + row + "\n")
    with pytest.raises(DataError, match=re.escape(problem)) as info:
        read_fnaf_boxes(path)
    assert "bad.csv:2" in str(info.value)


def test_unknown_header_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="neither"):
        read_annotations(write(tmp_path, "x.csv", "a,b\n1,2\n"))
    with pytest.raises(DataError, match="not found"):
        read_annotations(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="x.csv:2.*'y'"):
        read_fastmri_plus(write(tmp_path, "x.csv", "file,slice,study_level,x,y,width,height,label\n"
                                                    "f,1,No,1,two,3,4,L\n"))
