"""Bad data input is one line naming the field, the value and what was expected, before any training: a feature
column with one non-number cell (not dropped silently), a column of text left out with a word, pair noise past 0.5
named as the option it is."""

from __future__ import annotations

import logging

import pytest

from aipflow.data import HFDataModule, LabelNoise


def test_one_non_number_in_a_feature_column_is_refused_naming_column_row_and_value(tmp_path):
    rows = ["a,b,label"] + [f"{i / 10},{i % 7},{i % 2}" for i in range(40)]
    rows[8] = "0.7,abc,1"  # data row 7
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    dm = HFDataModule(str(tmp_path / "t.csv"), val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(ValueError, match=r"column 'b' holds numbers but row 7 has 'abc' \(1 such cells\)"):
        dm.setup()


def test_a_text_column_is_left_out_and_said_so(tmp_path, caplog):
    rows = ["a,name,label"] + [f"{i / 10},n{i},{i % 2}" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    dm = HFDataModule(str(tmp_path / "t.csv"), val_fraction=0.2, test_fraction=0.2)
    with caplog.at_level(logging.INFO):
        dm.setup()
    assert "left out, not numbers: ['name']" in caplog.text


def test_pair_noise_past_one_half_names_the_option_before_any_data_is_read():
    with pytest.raises(ValueError, match=r"data.label_noise.rate must lie in \[0, 0.5\) for pair noise, got 0.7"):
        LabelNoise("pair", 0.7)


def test_a_label_outside_the_classes_and_a_class_of_one_row_name_the_column_and_row(tmp_path):
    rows = ["a,label"] + [f"{i / 10},{i % 3}" for i in range(30)]
    rows[8] = "0.7,42"  # data row 7
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    dm = HFDataModule(str(tmp_path / "t.csv"), num_classes=3, val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(ValueError, match=r"data.label_column='label': row 7 has label 42, outside \[0, 3\)"):
        dm.setup()
    dm = HFDataModule(str(tmp_path / "t.csv"), val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(ValueError, match=r"class 42 has a single row \(row 7\); a stratified split needs at least 2"):
        dm.setup()


def test_an_empty_csv_names_the_source(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"data.source='.*empty.csv' is an empty file \(no header, no rows\)"):
        HFDataModule(str(tmp_path / "empty.csv")).setup()
