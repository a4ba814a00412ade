"""The sort-based distinct helpers equal np.unique."""
import numpy as np
import pytest

from hybrid_jax.data.store.distinct import count_distinct, distinct, distinct_inverse


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("shape", [(0,), (1,), (500,), (60, 9)])
def test_equal_np_unique(dtype, shape):
    values = np.random.default_rng(len(shape)).integers(-1, 40, shape).astype(dtype)
    want, inverse = np.unique(values, return_inverse=True)
    assert np.array_equal(distinct(values), want) and count_distinct(values) == len(want)
    got, got_inverse = distinct_inverse(values)
    assert np.array_equal(got, want) and np.array_equal(got_inverse, inverse.ravel())
    assert np.array_equal(got[got_inverse], values.ravel())
