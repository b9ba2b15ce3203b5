"""Tests of neuroprune.data: digits splits and layouts, npz loading and every refusal."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuroprune.data import DataSplits, iterate_batches, load_data, load_digits, load_npz
from neuroprune.core.errors import DataError, UnknownNameError

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_digits()


def _parts(splits: DataSplits) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {part: (getattr(splits, f"x_{part}"), getattr(splits, f"y_{part}")) for part in SPLITS}


# --------------------------------------------------------------------------- digits


@pytest.mark.parametrize(
    ("layout", "image_size", "shape"),
    [("flat", 8, (64,)), ("image", 8, (1, 8, 8)), ("image", 16, (1, 16, 16)), ("sequence", 8, (8, 8))],
)
def test_digits_shapes_per_layout(layout: str, image_size: int, shape: tuple[int, ...]) -> None:
    splits = load_digits(layout=layout, image_size=image_size)
    assert splits.input_shape == shape
    assert splits.num_classes == 10 and splits.name == "digits"
    total = 0
    for x, y in _parts(splits).values():
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == shape and len(x) == len(y)
        total += len(x)
    assert total == 1797
    assert len(splits.x_test) == 360  # ceil(0.2 * 1797)


def test_digits_every_class_in_every_split(digits: DataSplits) -> None:
    for _, y in _parts(digits).values():
        assert set(y.tolist()) == set(range(10))


def test_digits_splits_do_not_overlap(digits: DataSplits) -> None:
    rows = {part: {row.tobytes() for row in x.numpy()} for part, (x, _) in _parts(digits).items()}
    assert all(len(rows[part]) == len(getattr(digits, f"x_{part}")) for part in SPLITS)
    assert not rows["train"] & rows["val"]
    assert not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]


def test_digits_standardised_with_train_statistics(digits: DataSplits) -> None:
    mean, std = digits.x_train.mean(dim=0), digits.x_train.std(dim=0, unbiased=False)
    assert torch.allclose(mean, torch.zeros(64), atol=1e-5)
    constant = std < 1e-6  # e.g. the always-blank corner pixel: guarded, not divided by zero
    assert constant.any()
    assert torch.allclose(std[~constant], torch.ones(int((~constant).sum())), atol=1e-4)
    assert torch.isfinite(digits.x_val).all() and torch.isfinite(digits.x_test).all()
    # held-out parts are scaled with train statistics, so they are not centred themselves
    assert digits.x_test.mean(dim=0).abs().max() > 1e-3


def test_digits_deterministic_for_a_seed(digits: DataSplits) -> None:
    again, other = load_digits(seed=0), load_digits(seed=1)
    for part in SPLITS:
        assert torch.equal(getattr(digits, f"x_{part}"), getattr(again, f"x_{part}"))
        assert torch.equal(getattr(digits, f"y_{part}"), getattr(again, f"y_{part}"))
    assert not torch.equal(digits.y_train, other.y_train)


def test_digits_resize_is_bilinear_after_standardising() -> None:
    small, big = load_digits(layout="image"), load_digits(layout="image", image_size=32)
    assert big.x_val.shape == (len(small.x_val), 1, 32, 32)
    expected = F.interpolate(small.x_val, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(big.x_val, expected)
    assert torch.equal(big.y_val, small.y_val)


def test_digits_fractions_are_respected() -> None:
    splits = load_digits(test_fraction=0.5, val_fraction=0.5)
    assert len(splits.x_test) == 899 and len(splits.x_val) == 449 and len(splits.x_train) == 449


def test_digits_unknown_layout_lists_valid_ones() -> None:
    with pytest.raises(DataError, match="unknown layout 'grid'.*flat, image, sequence"):
        load_digits(layout="grid")


@pytest.mark.parametrize("kwargs", [{"test_fraction": 0.0}, {"val_fraction": 1.0}, {"test_fraction": "x"}])
def test_digits_bad_fraction(kwargs: dict[str, object]) -> None:
    with pytest.raises(DataError, match="must lie strictly between 0 and 1"):
        load_digits(**kwargs)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_digits_bad_image_size(size: object) -> None:
    with pytest.raises(DataError, match="image_size must be an integer >= 1"):
        load_digits(layout="image", image_size=size)


# --------------------------------------------------------------------------- npz


def _arrays(n_train: int = 40, n_test: int = 10, shape: tuple[int, ...] = (4, 5), classes: int = 3) -> dict:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.normal(3.0, 2.0, size=(n_train, *shape)).astype(np.float32),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.normal(3.0, 2.0, size=(n_test, *shape)).astype(np.float32),
        "y_test": np.arange(n_test) % classes,
    }


def _save(tmp_path, **arrays) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("layout", "shape", "expected"),
    [
        ("flat", (4, 5), (20,)),
        ("flat", (2, 4, 5), (40,)),
        ("image", (4, 5), (1, 4, 5)),
        ("image", (2, 4, 5), (2, 4, 5)),
        ("sequence", (4, 5), (4, 5)),
    ],
)
def test_npz_round_trip(tmp_path, layout: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    arrays = _arrays(shape=shape)
    splits = load_npz(_save(tmp_path, **arrays), layout=layout)
    assert splits.input_shape == expected and splits.num_classes == 3
    assert splits.name.startswith("npz:")
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (36, 4, 10)
    assert torch.equal(splits.y_test, torch.from_numpy(arrays["y_test"]).long())
    for _, y in _parts(splits).values():
        assert set(y.tolist()) == {0, 1, 2}  # stratified validation split
    raw = torch.from_numpy(_npz_layout_reference(arrays["x_test"], layout)).float()
    assert torch.equal(splits.x_test, raw) and not splits.standardized  # used as stored
    assert splits.x_train.dtype == torch.float32 and splits.y_train.dtype == torch.int64


def _npz_layout_reference(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "flat":
        return x.reshape(len(x), -1)
    return x[:, None] if layout == "image" and x.ndim == 3 else x


def test_npz_standardize_uses_train_statistics(tmp_path) -> None:
    arrays = _arrays()
    arrays["x_test"] = arrays["x_train"][:10] * 1.0  # same raw rows as the first train samples
    splits = load_npz(_save(tmp_path, **arrays), standardize=True)
    flat_train = splits.x_train.reshape(len(splits.x_train), -1)
    assert torch.allclose(flat_train.mean(dim=0), torch.zeros(flat_train.shape[1]), atol=1e-5)
    seen = torch.cat([splits.x_train, splits.x_val]).reshape(40, -1)
    for row in splits.x_test.reshape(10, -1):  # scaled exactly like its twin, not on its own
        assert torch.isclose(seen, row, atol=1e-5).all(dim=1).any()


def test_npz_num_classes_spans_train_and_test(tmp_path) -> None:
    arrays = _arrays()
    arrays["y_test"] = np.full(10, 7)
    assert load_npz(_save(tmp_path, **arrays)).num_classes == 8


def test_npz_integral_float_labels_accepted(tmp_path) -> None:
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.float64)
    assert load_npz(_save(tmp_path, **arrays)).y_train.dtype == torch.int64


def test_npz_rare_class_falls_back_to_random_split(tmp_path) -> None:
    arrays = _arrays()
    arrays["y_train"][0] = 9  # a single sample of class 9 cannot be stratified
    splits = load_npz(_save(tmp_path, **arrays))
    assert splits.num_classes == 10 and len(splits.x_val) == 4


def test_npz_deterministic_for_a_seed(tmp_path) -> None:
    path = _save(tmp_path, **_arrays())
    a, b, c = load_npz(path, seed=3), load_npz(path, seed=3), load_npz(path, seed=4)
    assert torch.equal(a.x_val, b.x_val) and not torch.equal(a.x_val, c.x_val)


def test_npz_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match="no such data file"):
        load_npz(tmp_path / "absent.npz")


def test_npz_not_an_archive(tmp_path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file at all")
    with pytest.raises(DataError, match="not a valid .npz"):
        load_npz(path)


def test_npz_plain_npy_refused(tmp_path) -> None:
    path = tmp_path / "single.npy"
    np.save(path, np.zeros((3, 2)))
    with pytest.raises(DataError, match="not a valid .npz.*single array"):
        load_npz(path)


def test_npz_pickle_file_refused(tmp_path) -> None:
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps({"x_train": [1, 2, 3]}))
    with pytest.raises(DataError, match="not a valid .npz"):
        load_npz(path)


def test_npz_pickled_object_array_refused(tmp_path) -> None:
    arrays = _arrays()
    arrays["y_train"] = np.array([{"label": i} for i in range(40)], dtype=object)
    with pytest.raises(DataError, match="'y_train'.*pickled Python objects"):
        load_npz(_save(tmp_path, **arrays))


def test_npz_missing_keys_lists_missing_and_present(tmp_path) -> None:
    arrays = _arrays()
    del arrays["y_test"], arrays["x_test"]
    arrays["extra"] = np.zeros(2)
    with pytest.raises(DataError, match="lacks arrays x_test, y_test; it holds: extra, x_train, y_train"):
        load_npz(_save(tmp_path, **arrays))


@pytest.mark.parametrize("key", ["x_train", "y_test"])
def test_npz_empty_array(tmp_path, key: str) -> None:
    arrays = _arrays()
    arrays[key] = arrays[key][:0]
    with pytest.raises(DataError, match=f"'{key}' is empty"):
        load_npz(_save(tmp_path, **arrays))


def test_npz_length_mismatch(tmp_path) -> None:
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"][:-1]
    with pytest.raises(DataError, match="x_train has 40 samples but y_train has 39"):
        load_npz(_save(tmp_path, **arrays))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npz_non_finite_inputs(tmp_path, bad: float) -> None:
    arrays = _arrays()
    arrays["x_test"][2, 1, 1] = bad
    with pytest.raises(DataError, match="'x_test' contains NaN or infinite"):
        load_npz(_save(tmp_path, **arrays))


def test_npz_non_numeric_inputs(tmp_path) -> None:
    arrays = _arrays()
    arrays["x_train"] = np.full((40, 2), "a")
    with pytest.raises(DataError, match="'x_train' must be numeric"):
        load_npz(_save(tmp_path, **arrays))


def test_npz_negative_labels(tmp_path) -> None:
    arrays = _arrays()
    arrays["y_train"][5] = -1
    with pytest.raises(DataError, match="'y_train' holds negative labels"):
        load_npz(_save(tmp_path, **arrays))


@pytest.mark.parametrize("labels", [np.linspace(0, 1, 10), np.ones(10, dtype=bool), np.full(10, np.nan)])
def test_npz_non_integer_labels(tmp_path, labels: np.ndarray) -> None:
    arrays = _arrays()
    arrays["y_test"] = labels
    with pytest.raises(DataError, match="'y_test' must hold integer class labels"):
        load_npz(_save(tmp_path, **arrays))


def test_npz_labels_must_be_1d(tmp_path) -> None:
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"].reshape(40, 1)
    with pytest.raises(DataError, match="'y_train' must be 1-D"):
        load_npz(_save(tmp_path, **arrays))


def test_npz_sample_shapes_must_agree(tmp_path) -> None:
    arrays = _arrays()
    arrays["x_test"] = arrays["x_test"][:, :, :3]
    with pytest.raises(DataError, match=r"x_train samples have shape \(4, 5\) but x_test samples \(4, 3\)"):
        load_npz(_save(tmp_path, **arrays))


@pytest.mark.parametrize(
    ("layout", "shape", "message"),
    [("image", (20,), "layout 'image' needs"), ("sequence", (2, 4, 5), "layout 'sequence' needs")],
)
def test_npz_layout_needs_matching_rank(tmp_path, layout: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_npz(_save(tmp_path, **_arrays(shape=shape)), layout=layout)


def test_npz_scalar_samples_refused(tmp_path) -> None:
    arrays = _arrays()
    arrays["x_train"] = np.zeros(40)
    with pytest.raises(DataError, match=r"'x_train' must have shape \(N, features...\)"):
        load_npz(_save(tmp_path, **arrays))


def test_npz_too_few_train_samples(tmp_path) -> None:
    with pytest.raises(DataError, match="at least 2 samples"):
        load_npz(_save(tmp_path, **_arrays(n_train=1)))


def test_npz_unknown_layout(tmp_path) -> None:
    with pytest.raises(DataError, match="valid layouts: flat, image, sequence"):
        load_npz(_save(tmp_path, **_arrays()), layout="cube")


# --------------------------------------------------------------------------- load_data


def test_load_data_digits_and_npz(tmp_path) -> None:
    assert load_data("digits", layout="image", image_size=32).input_shape == (1, 32, 32)
    splits = load_data(f"npz:{_save(tmp_path, **_arrays())}", layout="sequence", image_size=32)
    assert splits.input_shape == (4, 5)


@pytest.mark.parametrize("spec", ["mnist", "npz", "Digits", ""])
def test_load_data_unknown_spec(spec: str) -> None:
    with pytest.raises(UnknownNameError, match=f"unknown data spec '{spec}'; known: digits, npz:PATH"):
        load_data(spec)


def test_load_data_npz_without_path() -> None:
    with pytest.raises(DataError, match="needs a file path"):
        load_data("npz:")


# --------------------------------------------------------------------------- batches


def test_iterate_batches_in_order() -> None:
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    batches = list(iterate_batches(x, y, batch_size=4))
    assert [len(b) for b, _ in batches] == [4, 4, 2]
    assert all(isinstance(batch, tuple) for batch in batches)
    assert all(torch.equal(b.squeeze(1).long(), c) for b, c in batches)
    assert torch.equal(torch.cat([c for _, c in batches]), y)


def test_iterate_batches_shuffle_is_a_seeded_permutation() -> None:
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    def order(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([c for _, c in iterate_batches(x, y, 3, shuffle=True, generator=gen)])

    first, again = order(0), order(0)
    assert torch.equal(first, again)
    assert sorted(first.tolist()) == list(range(10)) and not torch.equal(first, y)
    for b, c in iterate_batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(1)):
        assert torch.equal(b.squeeze(1).long(), c)  # inputs and labels stay paired


@pytest.mark.parametrize("size", [0, -1, 2.0, True])
def test_iterate_batches_bad_batch_size(size: object) -> None:
    with pytest.raises(DataError, match="batch_size must be an integer >= 1"):
        iterate_batches(torch.zeros(3, 1), torch.zeros(3), size)


def test_iterate_batches_length_mismatch() -> None:
    with pytest.raises(DataError, match="x has 3 samples but y has 2"):
        iterate_batches(torch.zeros(3, 1), torch.zeros(2), 2)
