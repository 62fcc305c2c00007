"""The catalog: Parquet/CSV/FITS round trips with the same ids, clear errors, merges in id order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galmo.core.catalog import Catalog, catalog_format, merge_on_id, read_catalog, write_catalog
from galmo.core.errors import GalmoError


def sample() -> pd.DataFrame:
    return pd.DataFrame({
        "id": ["0042", "g10_000001", "1237648720693755918", "sim-7"],  # numeric-looking ids stay strings
        "ref": ["a.fits", "b.h5#1", "c.jpg", "d.png"],
        "label": np.array([3, -1, 0, 9], np.int64),
        "label_name": ["Barred Spiral", "", "Disturbed", "Edge-on with Bulge"],
        "redshift": [0.05, np.nan, 0.11, 0.2],
        "anomaly": [False, True, False, False],
        "Class1.1": np.linspace(0, 1, 4, dtype=np.float32),
    })


@pytest.mark.parametrize("name", ["cat.parquet", "cat.csv", "cat.fits", "cat.fit"])
def test_round_trip_keeps_ids_order_and_values(tmp_path, name):
    df = sample()
    path = write_catalog(df, tmp_path / name)
    back = read_catalog(path)
    assert list(back["id"]) == list(df["id"]) and all(isinstance(v, str) for v in back["id"])
    assert list(back.columns) == list(df.columns)
    assert list(back["label"]) == [3, -1, 0, 9]
    assert list(back["label_name"].fillna("")) == list(df["label_name"])
    np.testing.assert_allclose(back["redshift"], df["redshift"])
    assert list(back["anomaly"]) == [False, True, False, False]
    np.testing.assert_allclose(back["Class1.1"], df["Class1.1"], rtol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    # the namespace spelling
    assert list(Catalog.read(path)["id"]) == list(df["id"])


def test_fits_vector_column_round_trip(tmp_path):
    df = pd.DataFrame({"id": ["a", "b"], "embedding": [np.arange(4.0), np.arange(4.0) + 1]})
    back = read_catalog(write_catalog(df, tmp_path / "e.fits"))
    np.testing.assert_array_equal(np.stack(back["embedding"]), np.stack(df["embedding"]))


def test_integer_ids_become_strings(tmp_path):
    pd.DataFrame({"id": [100008, 100023], "x": [1, 2]}).to_parquet(tmp_path / "i.parquet")
    assert list(read_catalog(tmp_path / "i.parquet")["id"]) == ["100008", "100023"]


def test_errors_name_the_file_and_problem(tmp_path):
    df = sample()
    with pytest.raises(GalmoError, match=r"cat\.xlsx: unknown catalog format \(supported extensions: \.parquet"):
        write_catalog(df, tmp_path / "cat.xlsx")
    with pytest.raises(GalmoError, match=r"nope\.csv: no such catalog file"):
        read_catalog(tmp_path / "nope.csv")
    df.drop(columns="id").to_csv(tmp_path / "noid.csv", index=False)
    with pytest.raises(GalmoError, match=r"noid\.csv: catalog has no 'id' column \(columns: ref, label"):
        read_catalog(tmp_path / "noid.csv")
    pd.concat([df, df.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(GalmoError, match=r"dup\.csv: catalog has 1 duplicate ids \(e\.g\. '0042'\)"):
        read_catalog(tmp_path / "dup.csv")
    with pytest.raises(GalmoError, match=r"dup\.parquet: catalog has 1 duplicate ids"):
        write_catalog(pd.concat([df, df.iloc[:1]]), tmp_path / "dup.parquet")
    assert not (tmp_path / "dup.parquet").exists()
    for name in ("bad.parquet", "bad.fits"):
        (tmp_path / name).write_bytes(b"\x00garbage" * 100)
        with pytest.raises(GalmoError, match=rf"{name}: cannot read (parquet|fits) catalog"):
            read_catalog(tmp_path / name)
    assert catalog_format("x.FITS.gz") == "fits"


def test_failed_write_leaves_old_file_untouched(tmp_path):
    path = write_catalog(sample(), tmp_path / "c.parquet")
    before = path.read_bytes()
    bad = sample().assign(obj=[object(), 1, "x", 2.0])  # pyarrow cannot store this
    with pytest.raises(GalmoError, match=r"c\.parquet: cannot write parquet catalog"):
        write_catalog(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["c.parquet"]


def test_merge_on_id_keeps_left_order():
    left = pd.DataFrame({"id": ["c", "a", "b"], "x": [1, 2, 3]})
    right = pd.DataFrame({"id": ["a", "b", "z", "c"], "x": [20, 30, 99, 10], "y": [0.2, 0.3, 9.9, 0.1]})
    m = merge_on_id(left, right)
    assert list(m["id"]) == ["c", "a", "b"] and list(m["x"]) == [1, 2, 3]
    assert list(m["x_right"]) == [10, 20, 30] and list(m["y"]) == [0.1, 0.2, 0.3]
    assert list(merge_on_id(left, right, overlap="right")["x"]) == [10, 20, 30]
    assert "x_right" not in merge_on_id(left, right, overlap="left").columns
    partial = merge_on_id(left, right.iloc[:2])
    assert list(partial["id"]) == ["c", "a", "b"] and np.isnan(partial["y"].iat[0])
    assert list(merge_on_id(left, right.iloc[:2], how="inner")["id"]) == ["a", "b"]
    ints = merge_on_id(pd.DataFrame({"id": [5, 7]}), pd.DataFrame({"id": ["7", "5"], "v": [7, 5]}))
    assert list(ints["id"]) == ["5", "7"] and list(ints["v"]) == [5, 7]
    with pytest.raises(GalmoError, match="right catalog: catalog has 1 duplicate ids"):
        merge_on_id(left, pd.concat([right, right.iloc[:1]]))


def test_fits_missing_values_round_trip(tmp_path):
    df = pd.DataFrame({"id": ["a", "b", "c"],
                       "n": pd.array([4, None, 6], dtype="Int64"),      # nullable integers stay nullable
                       "name": ["x", None, "z"],                        # missing text becomes ''
                       "flag": pd.array([True, None, False], dtype="boolean"),
                       "kind": pd.Categorical(["s", "e", "s"]),
                       "z": np.array([0.1, np.nan, 0.3], ">f8")})      # big-endian in, native out
    back = read_catalog(write_catalog(df, tmp_path / "m.fits"))
    assert list(back.columns) == list(df.columns)
    assert str(back["n"].dtype) == "Int64" and back["n"].tolist()[0] == 4 and back["n"].isna().tolist() == [False, True, False]
    assert list(back["name"]) == ["x", "", "z"] and list(back["flag"]) == [True, False, False]
    assert list(back["kind"]) == ["s", "e", "s"]
    assert back["z"].dtype == np.float64 and back["z"].dtype.isnative and np.isnan(back["z"].iat[1])
    np.testing.assert_allclose(back["z"].to_numpy()[[0, 2]], [0.1, 0.3])
