"""Data pipeline: loaders (seq, MovieLens, tables), preprocessing, cache, malformed input,
leave-one-out splits, training examples, batching, synthetic data and named datasets.

Every fixture is written inline under ``tmp_path``.  The real datasets are read only from
``$ELASTIC_BENCH_DATA`` or ``../shared/data`` beside the checkout when present (skipped otherwise); they are
never copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from elastic_bench.data import formats, named
from elastic_bench.data.batching import batch_indices, iterate_batches, left_pad
from elastic_bench.data.formats import DataFormatError, LoadOptions, SequenceDataset, load
from elastic_bench.data.splits import leave_one_out, training_examples
from elastic_bench.data.synthetic import synthetic

CPU = torch.device("cpu")


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def seqs_of(ds: SequenceDataset) -> list[list[int]]:
    return [s.tolist() for s in ds.sequences]


# --------------------------------------------------------------------------------------
# A small raw interaction log shared by every raw format.
#
# (user, item, rating, timestamp), unsorted, with an exact duplicate row and two ties:
#   user 10: item 100 @ 50, items 300 and 200 both @ 100  -> tie: 200 before 300
#   user 20: item 200 @ 10, item 300 @ 5                  -> 300 then 200
#   user  7: items 400 and 100 both @ 1                   -> tie: 100 before 400
# Dense ids: users 7, 10, 20 -> rows 0, 1, 2; items 100, 200, 300, 400 -> 1, 2, 3, 4.
# --------------------------------------------------------------------------------------

RAW = [
    (10, 300, 5, 100),
    (20, 200, 1, 10),
    (10, 100, 3, 50),
    (7, 400, 4, 1),
    (10, 200, 4, 100),
    (10, 100, 3, 50),  # exact duplicate
    (20, 300, 2, 5),
    (7, 100, 4, 1),
]
EXPECTED = [[1, 4], [1, 2, 3], [3, 2]]
EXPECTED_ITEMS = 4


def shuffled(rows, seed):
    rows = list(rows)
    np.random.default_rng(seed).shuffle(rows)
    return rows


def ratings_dat(rows) -> str:
    return "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows)


def u_data(rows) -> str:
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows)


def ratings_csv(rows) -> str:
    return "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r}.5,{t}\n" for u, i, r, t in rows)


def custom_csv(rows, sep=",") -> str:
    head = sep.join(["ts", "uid", "score", "iid"]) + "\n"
    return head + "".join(sep.join(map(str, (t, u, r, i))) + "\n" for u, i, r, t in rows)


CUSTOM = LoadOptions(user_col="uid", item_col="iid", time_col="ts")

RAW_FORMATS = {
    "ratings.dat": (ratings_dat, LoadOptions()),
    "u.data": (u_data, LoadOptions()),
    "ratings.csv": (ratings_csv, LoadOptions()),
    "events.csv": (custom_csv, CUSTOM),
    "events.tsv": (lambda rows: custom_csv(rows, "\t"), CUSTOM),
}


@pytest.mark.parametrize("filename", list(RAW_FORMATS))
def test_raw_formats_round_trip_and_order_independent(tmp_path, filename):
    render, opts = RAW_FORMATS[filename]
    results = []
    for seed in range(4):  # the same log in four row orders
        path = write(tmp_path / str(seed) / filename, render(shuffled(RAW, seed)))
        ds = load(path, opts)
        assert isinstance(ds, SequenceDataset)
        results.append((seqs_of(ds), ds.n_items))
    assert all(r == (EXPECTED, EXPECTED_ITEMS) for r in results), results


@pytest.mark.parametrize("filename", ["ratings.dat", "u.data", "ratings.csv"])
def test_movielens_autodetected_and_explicit(tmp_path, filename):
    render, _ = RAW_FORMATS[filename]
    path = write(tmp_path / filename, render(RAW))
    assert formats.detect_format(path) == "movielens"
    assert seqs_of(load(path, LoadOptions(fmt="movielens"))) == EXPECTED
    other = write(tmp_path / ("x" + Path(filename).suffix), render(RAW))  # not a canonical name
    assert seqs_of(load(other, LoadOptions(fmt="movielens"))) == EXPECTED


def test_movielens_header_after_blank_lines(tmp_path):
    path = write(tmp_path / "ratings.csv", "\n\n" + ratings_csv(RAW))
    assert seqs_of(load(path)) == EXPECTED


def test_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow not installed: Parquet needs it (not a dependency)")
    import pandas as pd

    for seed in range(3):
        rows = shuffled(RAW, seed)
        df = pd.DataFrame({"uid": [r[0] for r in rows], "iid": [r[1] for r in rows], "ts": [r[3] for r in rows]})
        path = tmp_path / f"events{seed}.parquet"
        df.to_parquet(path)
        assert formats.detect_format(path) == "table"
        ds = load(path, CUSTOM)
        assert (seqs_of(ds), ds.n_items) == (EXPECTED, EXPECTED_ITEMS)


def test_table_dates_as_timestamps(tmp_path):
    path = write(
        tmp_path / "log.csv",
        "user,item,timestamp\n1,5,2020-01-01 00:00:05\n1,9,2020-01-01 00:00:01\n1,7,2020-01-01 00:00:05\n",
    )
    rows = formats.load_table(path)
    assert sorted(rows[:, 2].tolist()) == [1577836801, 1577836805, 1577836805]  # epoch seconds
    assert seqs_of(load(path)) == [[3, 1, 2]]  # 9 first, then the tie 5 < 7


def test_table_rejects_fractional_ids(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\n1,5,1\n1,6.5,2\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3:.*'item'"):
        load(path)


def test_table_large_integer_ids_stay_distinct(tmp_path):
    big = 2**60
    path = write(tmp_path / "log.csv", f"user,item,timestamp\n{big},{big + 1},1\n{big},{big + 2},2\n{big + 1},{big + 1},1\n{big + 1},{big + 2},3\n")
    ds = load(path)
    assert seqs_of(ds) == [[1, 2], [1, 2]] and ds.n_items == 2


def test_seq_round_trip(tmp_path):
    path = write(tmp_path / "d.txt", "5 3 1 2\n\n2 2 3\n")
    assert formats.detect_format(path) == "seq"
    ds = load(path, name="tiny")
    assert ds.name == "tiny"
    assert seqs_of(ds) == [[2, 3], [3, 1, 2]]  # ordered by user id
    assert ds.n_items == 3 and ds.n_users == 2
    assert ds.stats()["interactions"] == 5
    assert ds.item_counts().tolist() == [0, 1, 2, 2]


def test_reindex_dense_from_one(tmp_path):
    rows = [(u, i, 0, t) for t, (u, i) in enumerate([(900, 77), (900, 5), (3, 1000), (3, 77), (41, 5), (41, 1000)])]
    ds = load(write(tmp_path / "ratings.dat", ratings_dat(rows)))
    items = np.concatenate(ds.sequences)
    assert sorted(set(items.tolist())) == list(range(1, ds.n_items + 1)) == [1, 2, 3]
    # users by original id (3, 41, 900), items by original id (5 -> 1, 77 -> 2, 1000 -> 3)
    assert seqs_of(ds) == [[3, 2], [1, 3], [2, 1]]


def test_kcore_is_iterative(tmp_path):
    # min 2 per user and per item.  Pass 1 drops user 6 (one row) and items 5, 6 (one user
    # each); then users 3, 4 fall to one item, which leaves item 7 with one user, which
    # leaves user 5 with one item.  Only users 1 and 2 survive, with items 1 and 2.
    inter = {1: [1, 2], 2: [1, 2], 3: [3, 5], 4: [3, 6], 5: [7, 1], 6: [7]}
    lines = [f"{u},{i},{t}" for u, items in inter.items() for t, i in enumerate(items)]
    path = write(tmp_path / "log.csv", "user,item,timestamp\n" + "\n".join(lines) + "\n")
    rows = formats.load_table(path)
    assert formats.kcore(rows, 2, 2)[:, 0].tolist().count(5) == 0
    ds = load(path, LoadOptions(min_user_items=2, min_item_users=2))
    assert seqs_of(ds) == [[1, 2], [1, 2]] and ds.n_items == 2
    # a single pass would have kept users 3, 4 and 5
    with pytest.raises(DataFormatError, match="fewer than 2"):
        load(path)  # user 6 has one interaction and no filter is asked for


def test_kcore_on_seq_files_reindexes(tmp_path):
    path = write(tmp_path / "d.txt", "1 1 2 3\n2 1 2\n3 3 4 1\n")
    ds = load(path, LoadOptions(min_item_users=2))  # item 4 appears once
    assert seqs_of(ds) == [[1, 2, 3], [1, 2], [3, 1]] and ds.n_items == 3


def test_kcore_that_removes_everything_is_an_error(tmp_path):
    path = write(tmp_path / "ratings.dat", ratings_dat(RAW))
    with pytest.raises(DataFormatError, match=str(path)):
        load(path, LoadOptions(min_user_items=100))


def test_cache_hit_and_key(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = write(tmp_path / "ratings.dat", ratings_dat(RAW))
    first = load(path, cache_dir=cache)
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 1 and first.meta["cache"] == str(files[0])

    def boom(*a, **k):
        raise AssertionError("parsed again instead of reading the cache")

    monkeypatch.setattr(formats, "load_movielens", boom)
    second = load(path, cache_dir=cache, name="again")
    assert second.meta["cache"] == str(files[0])
    assert seqs_of(second) == seqs_of(first) and second.n_items == first.n_items and second.name == "again"
    assert all(s.dtype == np.int64 for s in second.sequences)
    monkeypatch.undo()

    # other options -> other key
    third = load(path, LoadOptions(min_user_items=2), cache_dir=cache)
    assert third.meta["cache"] != first.meta["cache"] and len(list(cache.glob("*.npz"))) == 2
    # other content (same name, same options) -> other key, fresh result
    write(path, ratings_dat(RAW + [(20, 400, 1, 99)]))
    fourth = load(path, cache_dir=cache)
    assert fourth.meta["cache"] not in (first.meta["cache"], third.meta["cache"])
    assert seqs_of(fourth)[2] == [3, 2, 4]
    assert len(list(cache.glob("*.npz"))) == 3


def test_corrupt_cache_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    path = write(tmp_path / "ratings.dat", ratings_dat(RAW))
    cached = Path(load(path, cache_dir=cache).meta["cache"])
    cached.write_bytes(b"not an npz")
    assert seqs_of(load(path, cache_dir=cache)) == EXPECTED


# --------------------------------------------------------------------------------------
# Malformed input: a DataFormatError naming the file and, where there is one, the line.
# --------------------------------------------------------------------------------------

MALFORMED = {
    "empty seq": ("d.txt", "", None),
    "blank seq": ("d.txt", "\n  \n", None),
    "empty ratings.dat": ("ratings.dat", "", None),
    "empty csv": ("log.csv", "", None),
    "header-only csv": ("log.csv", "user,item,timestamp\n", None),
    "non-integer id (seq)": ("d.txt", "1 2 3\n2 x 4\n", 2),
    "non-integer id (ratings.dat)": ("ratings.dat", "1::2::5::100\n1::abc::5::100\n", 2),
    "non-integer id (u.data)": ("u.data", "1\t2\t5\t100\n1\t3\t5\t101\n2\tb\t1\t1\n", 3),
    "non-integer id (table)": ("log.csv", "user,item,timestamp\n1,2,3\n1,x,4\n", 3),
    "non-integer id (table, blank line)": ("log.csv", "user,item,timestamp\n1,2,3\n\n1,x,4\n", 4),
    "header line (seq)": ("d.txt", "user_id items\n1 2 3\n", 1),
    "user with one item": ("d.txt", "1 2 3\n2 5\n", 2),
    "item id 0 (seq)": ("d.txt", "1 2 0\n", 1),
    "latin-1 (seq)": ("d.txt", b"1 2 3\n2 3 4\n3 4 \xe9\n", 3),
    "latin-1 (ratings.dat)": ("ratings.dat", b"1::2::5::100\n1::\xe92::5::100\n", 2),
    "latin-1 (csv)": ("log.csv", b"user,item,timestamp\n1,2,3\n1,\xe9,4\n", 3),
    "missing column": ("log.csv", "user,item,time\n1,2,3\n", 1),
    "too few fields (ratings.dat)": ("ratings.dat", "1::2::5::100\n1::3::5\n", 2),
    "too many fields (ratings.dat)": ("ratings.dat", "1::2::5::100\n1::3::5::100::7\n", 2),
    "user on two lines": ("d.txt", "1 2 3\n2 3 4\n1 4 5\n", 3),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_names_file_and_line(tmp_path, case):
    name, content, line = MALFORMED[case]
    path = write(tmp_path / name, content)
    with pytest.raises(DataFormatError) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    if line is not None:
        assert f"{path}:{line}:" in msg, msg


def test_malformed_messages_say_what_is_wrong(tmp_path):
    def err(name, content, opts=LoadOptions()):
        with pytest.raises(DataFormatError) as info:
            load(write(tmp_path / name, content), opts)
        return str(info.value)

    assert "header" in err("a.txt", "user item\n1 2 3\n")
    assert "'x'" in err("b.txt", "1 2 3\n2 x 4\n")
    assert "UTF-8" in err("c.txt", b"1 2 \xe9\n")
    assert "'timestamp'" in err("d.csv", "user,item,time\n1,2,3\n")
    assert "two lines" in err("e.txt", "1 2 3\n1 4 5\n")
    assert "--format" in err("f.txt", "1 2 3\n", LoadOptions(fmt="nope"))
    with pytest.raises(DataFormatError, match="no such file"):
        load(tmp_path / "missing.txt")


# --------------------------------------------------------------------------------------
# Leave-one-out and training examples.
# --------------------------------------------------------------------------------------


def distinct_dataset(lengths) -> SequenceDataset:
    """Sequences whose items are globally distinct, so an item identifies user and position."""
    seqs, nxt = [], 1
    for n in lengths:
        seqs.append(np.arange(nxt, nxt + n, dtype=np.int64))
        nxt += n
    return SequenceDataset("distinct", seqs, nxt - 1)


def test_leave_one_out():
    ds = distinct_dataset([1, 2, 3, 5, 12, 4])
    max_len = 4
    split = leave_one_out(ds, max_len)
    assert split.dropped == 2 and len(split.train) == 4
    assert split.valid.users.tolist() == split.test.users.tolist() == [2, 3, 4, 5]
    for k, u in enumerate(split.valid.users):
        s = ds.sequences[u]
        train = split.train[k]
        assert train.tolist() == s[:-2].tolist()
        vin, vt = split.valid.inputs[k], int(split.valid.targets[k])
        tin, tt = split.test.inputs[k], int(split.test.targets[k])
        assert vt == s[-2] and tt == s[-1]
        assert vt not in vin and tt not in tin
        assert vin.tolist() == train[-max_len:].tolist()
        assert tin.tolist() == np.append(train, vt)[-max_len:].tolist()  # test input = train + valid item
        assert len(vin) <= max_len and len(tin) <= max_len
    k12 = split.valid.users.tolist().index(4)
    assert split.test.inputs[k12].tolist() == ds.sequences[4][-5:-1].tolist()  # the most recent 4
    with pytest.raises(ValueError):
        leave_one_out(ds, 0)


def locate(train):
    return {int(item): (u, p) for u, s in enumerate(train) for p, item in enumerate(s)}


@pytest.mark.parametrize("max_len", [3, 50])
def test_training_examples_all(max_len):
    train = leave_one_out(distinct_dataset([3, 4, 6, 9, 20]), 1000).train
    where = locate(train)
    inputs, targets = training_examples(train, "all", max_len, np.random.default_rng(0))
    assert len(inputs) == sum(len(s) >= 2 for s in train)
    for x, y in zip(inputs, targets):
        u, p0 = where[int(x[0])]
        s = train[u]
        assert len(x) == len(y) == min(len(s) - 1, max_len)
        # x is the most recent window before the last train item; y[t] is the item after x[t]
        assert x.tolist() == s[-len(x) - 1 : -1].tolist()
        assert y.tolist() == s[p0 + 1 : p0 + 1 + len(x)].tolist()
        assert y[:-1].tolist() == x[1:].tolist() and y[-1] == s[-1]
        assert all(y[t] != x[t] for t in range(len(x)))  # no position sees its own target


@pytest.mark.parametrize("max_len", [2, 50])
def test_training_examples_last(max_len):
    train = leave_one_out(distinct_dataset([3, 4, 6, 9, 20, 31]), 1000).train
    where = locate(train)
    for seed in range(5):
        inputs, targets = training_examples(train, "last", max_len, np.random.default_rng(seed))
        per_user: dict[int, list[int]] = {}
        for x, y in zip(inputs, targets):
            assert len(y) == 1 and 1 <= len(x) <= max_len
            u, p = where[int(y[0])]
            s = train[u]
            assert p >= 1 and int(y[0]) not in x.tolist()
            assert x.tolist() == s[:p][-max_len:].tolist()  # the most recent part of a strict prefix
            per_user.setdefault(u, []).append(p)
        for u, s in enumerate(train):
            if len(s) < 2:
                assert u not in per_user
            else:
                cuts = per_user[u]
                assert len(s) - 1 in cuts and len(cuts) == len(set(cuts)) and len(cuts) <= 2
    a = training_examples(train, "last", max_len, np.random.default_rng(7))
    b = training_examples(train, "last", max_len, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))


def test_training_examples_errors():
    with pytest.raises(ValueError, match="objective"):
        training_examples([np.arange(1, 5)], "middle", 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_len"):
        training_examples([np.arange(1, 5)], "last", 0, np.random.default_rng(0))


# --------------------------------------------------------------------------------------
# Batching.
# --------------------------------------------------------------------------------------


def test_left_pad():
    seqs = [np.array([1, 2]), np.array([3]), np.array([4, 5, 6])]
    assert left_pad(seqs).tolist() == [[0, 1, 2], [0, 0, 3], [4, 5, 6]]
    assert left_pad(seqs, 2).tolist() == [[1, 2], [0, 3], [5, 6]]  # keeps the most recent
    assert left_pad(seqs).dtype == np.int64


def random_examples(n, seed=0, max_len=40):
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(1, 100, size=int(rng.integers(1, max_len + 1))) for _ in range(n)]
    targets = rng.integers(1, 100, size=n)
    return inputs, targets


def epoch(inputs, targets, seed, batch_size=16, aligned=False):
    rng = None if seed is None else np.random.default_rng(seed)
    return list(iterate_batches(inputs, targets, batch_size, rng, CPU, aligned=aligned))


@pytest.mark.parametrize("seed", [None, 0, 1])
def test_batches_left_padded_to_their_longest_and_cover_every_example_once(seed):
    inputs, targets = random_examples(203)
    batches = epoch(inputs, targets, seed)
    seen = np.concatenate([idx for _, _, idx in batches])
    assert sorted(seen.tolist()) == list(range(len(inputs)))
    for x, y, idx in batches:
        assert x.dtype == y.dtype == torch.int64 and x.device.type == "cpu"
        assert x.shape == (len(idx), max(len(inputs[i]) for i in idx))
        assert bool((x != 0).any(0).all())  # no all-padding column
        assert x.tolist() == left_pad([inputs[i] for i in idx]).tolist()
        assert y.tolist() == targets[idx].tolist()
        assert 1 <= len(idx) <= 16


def test_batching_deterministic_and_bucketed():
    inputs, targets = random_examples(300, max_len=100)
    a, b, c = epoch(inputs, targets, 5), epoch(inputs, targets, 5), epoch(inputs, targets, 6)
    assert all(torch.equal(p[0], q[0]) and np.array_equal(p[2], q[2]) for p, q in zip(a, b)) and len(a) == len(b)
    assert [p[2].tolist() for p in a] != [p[2].tolist() for p in c]
    cells = sum(x.numel() for x, _, _ in a)
    real = sum(len(s) for s in inputs)
    assert cells < 1.1 * real  # bucketing by length keeps padding small (all in one pool here)
    assert batch_indices(np.array([3, 1, 2]), 2, None)[0].tolist() == [1, 2]


def test_one_target_per_example_as_length_one_arrays():
    inputs, targets = random_examples(20)
    as_arrays = [np.array([t]) for t in targets]
    for (x1, y1, i1), (x2, y2, i2) in zip(epoch(inputs, targets, 3), epoch(inputs, as_arrays, 3)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and y1.shape == (len(i1),)


def test_aligned_targets_padded_like_inputs():
    train = [np.arange(1, n + 1) * 10 for n in (2, 5, 9, 3, 17, 4, 8)]
    inputs, targets = training_examples(train, "all", 6, np.random.default_rng(0))
    for x, y, idx in epoch(inputs, targets, 0, batch_size=3, aligned=True):
        assert x.shape == y.shape
        assert torch.equal(x == 0, y == 0)
        assert y.tolist() == left_pad([targets[i] for i in idx]).tolist()
        real = x[:, :-1] != 0
        assert torch.equal(y[:, :-1][real], x[:, 1:][real])  # next-item alignment


def test_iterate_batches_rejects_bad_arguments():
    inputs, targets = random_examples(5)
    with pytest.raises(ValueError):
        epoch(inputs, targets, 0, batch_size=0)
    with pytest.raises(ValueError):
        epoch(inputs, targets[:3], 0)
    with pytest.raises(ValueError):
        epoch(inputs, [np.array([1, 2])] * 5, 0, aligned=True)  # lengths differ from inputs


# --------------------------------------------------------------------------------------
# Synthetic data.
# --------------------------------------------------------------------------------------


def test_synthetic_deterministic():
    a, b = synthetic(50, 40, "uniform:3..12", seed=3), synthetic(50, 40, "uniform:3..12", seed=3)
    c = synthetic(50, 40, "uniform:3..12", seed=4)
    assert seqs_of(a) == seqs_of(b) and seqs_of(a) != seqs_of(c)
    assert a.n_users == 50 and a.n_items == 40
    items = np.concatenate(a.sequences)
    assert items.min() >= 1 and items.max() <= 40 and items.dtype == np.int64


@pytest.mark.parametrize(
    ("spec", "lo", "hi"),
    [("fixed:7", 7, 7), ("uniform:4..9", 4, 9), ("lognormal:20", 3, 60), ("fixed:500", 60, 60), ("fixed:1", 3, 3)],
)
def test_synthetic_lengths(spec, lo, hi):
    ds = synthetic(300, 30, spec, max_len=60, seed=0)
    lengths = np.array([len(s) for s in ds.sequences])
    assert lengths.min() >= lo and lengths.max() <= hi
    if spec.startswith("uniform"):
        assert set(lengths.tolist()) == set(range(4, 10))
    if spec.startswith("lognormal"):
        assert 14 < lengths.mean() < 26 and len(set(lengths.tolist())) > 10


@pytest.mark.parametrize(
    "spec", ["gauss:3", "fixed", "fixed:x", "fixed:0", "uniform:5", "uniform:9..4", "uniform:a..b", "lognormal:0", "lognormal:-2", "lognormal:x", ""]
)
def test_synthetic_bad_spec(spec):
    with pytest.raises(ValueError, match="fixed:N, uniform:A..B, lognormal:MEAN"):
        synthetic(5, 10, spec)


# --------------------------------------------------------------------------------------
# Named datasets.
# --------------------------------------------------------------------------------------


def fake_data_dir(root: Path) -> Path:
    write(root / "ml-1m" / "ml-1m.txt", "1 1 2 3\n2 2 3 1\n")
    return root


def test_named_resolve_explicit_and_env(tmp_path, monkeypatch):
    root = fake_data_dir(tmp_path / "data")
    monkeypatch.delenv(named.ENV_VAR, raising=False)
    expected = root / "ml-1m" / "ml-1m.txt"
    assert named.resolve("ml-1m", root) == expected
    assert named.resolve("ml-1m", str(root)) == expected
    monkeypatch.setenv(named.ENV_VAR, str(root))
    assert named.resolve("ml-1m") == expected
    other = fake_data_dir(tmp_path / "other")
    assert named.resolve("ml-1m", other) == other / "ml-1m" / "ml-1m.txt"  # --data-dir wins over the variable
    assert seqs_of(load(expected)) == [[1, 2, 3], [2, 3, 1]]


def test_named_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(named.ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=r"unknown dataset 'ml-2m'.*ml-1m"):
        named.resolve("ml-2m", tmp_path)
    with pytest.raises(ValueError, match=rf"--data-dir.*{named.ENV_VAR}"):
        named.resolve("ml-1m")
    with pytest.raises(ValueError, match=r"ml-1m/ml-1m\.txt") as info:
        named.resolve("ml-1m", tmp_path)
    assert str(tmp_path) in str(info.value)
    monkeypatch.setenv(named.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        named.resolve("beauty")


def real_data_dir() -> Path | None:
    # $ELASTIC_BENCH_DATA, else the team's ../shared/data beside the checkout (CI lays a copy there)
    for candidate in (os.environ.get(named.ENV_VAR), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if candidate and (Path(candidate) / "ml-1m" / "ml-1m.txt").is_file():
            return Path(candidate)
    return None


REAL = real_data_dir()
needs_real = pytest.mark.skipif(REAL is None, reason=f"real datasets not found (set {named.ENV_VAR})")


@needs_real
@pytest.mark.parametrize(
    ("name", "users", "items", "interactions"),
    [("ml-1m", 6040, 3706, 1_000_209), ("beauty", 22_363, 12_101, 198_502), ("sports", 35_598, 18_357, 296_337)],
)
def test_real_named_dataset_statistics(name, users, items, interactions):
    path = named.resolve(name, REAL)
    if not path.is_file():
        pytest.skip(f"{path} missing")
    stats = load(path, LoadOptions(fmt=named.NAMED[name].fmt)).stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (users, items, interactions)


@needs_real
def test_real_ml1m_five_core_items(tmp_path):
    ds = load(named.resolve("ml-1m", REAL), LoadOptions(min_item_users=5), cache_dir=tmp_path)
    stats = ds.stats()  # README: items with >= 5 interactions -> 3,416 items, 999,611 interactions
    assert (stats["users"], stats["items"], stats["interactions"]) == (6040, 3416, 999_611)
    split = leave_one_out(ds, 200)
    assert split.dropped == 0 and len(split.test.inputs) == 6040
