"""Test set-up: simulate 8 CPU devices (must happen before jax is imported anywhere).

JAX_PLATFORMS and XLA_FLAGS already in the environment win: benchmarks.accelerator_check runs a
selection of these tests on a GPU with JAX_PLATFORMS=cuda."""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def shared_corpus_cache(tmp_path_factory) -> pathlib.Path:
    """One cache of prepared corpora for the whole test run (data.store's default prepares the
    configured source on first use): XQuAD-R is prepared once, not in every test's workdir."""
    from hybrid_jax.data.corpus_cache import CACHE_ENV

    where = os.environ.get(CACHE_ENV) or str(tmp_path_factory.getbasetemp() / "corpora")
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, where)
    yield pathlib.Path(where)
    mp.undo()


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data (verified XQuAD / XQuAD-R copies); tests that need it skip without it."""
    if not (SHARED_DATA / "xquad-r").is_dir():
        pytest.skip("../shared/data/xquad-r not present")
    return SHARED_DATA
