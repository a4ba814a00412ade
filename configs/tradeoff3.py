"""The trade-off study, third edition: zero-shot in both directions, a recipe that keeps the start.

    python -m hybrid_jax.study --config configs/tradeoff3.py:pilot --workdir W   (the recipe pilot)
    python -m hybrid_jax.study --config configs/tradeoff3.py[:<grid>] --workdir W (a grid)

Why a third edition (docs/tradeoff_second_edition.md): its recipe lowered the starting model's
monolingual mAP@20 in every condition from the first updates (temperature 0.05 where
multilingual-e5 was trained at 0.01; a first update at learning rate 0 from a 2-step warm-up
that starts at zero), its dev-loss selection never kept anything but the last step, and the
starting model was no candidate.  Here:

* Zero-shot both ways, as the paper evaluates: direction A trains on MLQA-R (train fold of its
  article units, dev = held-out MLQA-R units) and evaluates all of XQuAD-R (1,190 questions x 11
  languages); direction B trains on XQuAD-R (train fold, dev = held-out XQuAD-R articles) and
  evaluates all of MLQA-R.  tests/test_tradeoff3.py checks that no evaluated question id or
  answer sentence of a direction is among its training or dev examples, in any language.
* The recipe base (the pilot varies one factor at a time from it): multilingual-e5-small, one
  same-paragraph hard negative, temperature 0.01 (the model's own), lr 1e-5, 10% warm-up whose
  first update is already at lr / warm-up steps, the word-embedding table frozen, hybrid
  batches with exactly round(alpha x N) mono batches.  The grids add the pilot's registered
  setting (REGISTERED_SETTING) and its shapes: batch 32 through GradCache 2 x 16, 20 steps.
* Dev selection on mAP@20 (mono, cross and multi logged apart in metrics.jsonl) with the starting
  model scored at step 0 as a candidate.

Variants (docs/tradeoff3_protocol.md registers the grids; each has its own workdir):
  ''           the main grid, direction A: zero-shot, X-X-mono and hybrid x SEEDS_A, then the
               alpha dose-response (X-Y, alpha 0.25 and 0.75 on DOSE_SEEDS)
  'B'          direction B: zero-shot, X-X-mono and hybrid x SEEDS_B
  'budget10', 'budget80'      direction A at 10 and 80 steps (own warm-up and decay), ARM_SEEDS
  'fraction25', 'fraction50'  direction A on 25% / 50% of the training questions, ARM_SEEDS
  'weak'       direction A from the weakened start (top 2 layers re-initialised), ARM_SEEDS
  'pilot'  the recipe pilot (hybrid_jax/study/pilot.py; docs/tradeoff_pilot.md): direction A,
           batch 32 (GradCache 2 x 16) and 20 steps to fit a 2-core CPU,
           X-X-mono / hybrid (and X-Y for the base) x one seed, one factor at a time; dev data
           only: no test question is scored (eval.datasets is empty).
  'pilot-seeds'  the pilot's seed replication: the leading setting (lr3e-5) on seeds 0-3 with
           per-query dev scores (the variance components of the power analysis), its X-Y, and
           the base on a second seed.
  'tiny'   the pilot on a random tiny model, en + de, both directions, 4 steps (tests; seconds).
"""
import ml_collections

from configs import paper_cpu, tradeoff

GRIDS = ("", "B", "budget10", "budget80", "fraction25", "fraction50", "weak")
VARIANTS = GRIDS + ("pilot", "pilot-seeds", "tiny")
REGISTERED_SETTING = "lr3e-5"  # the pilot's choice (docs/tradeoff_pilot.md)
PROTOCOL = "docs/tradeoff3_protocol.md"
PROTOCOL_SHA256 = "535fbf66d09246ce1e909093ab0bf5e6bd4c939b8befb7f41a273527a5cf9c2d"
SEEDS_A = tuple(range(5))      # section 10 of the protocol (its sequential rule may add 5-9)
SEEDS_B = tuple(range(5))
DOSE_SEEDS = (0, 1, 2, 3, 4)
ARM_SEEDS = (0, 1, 2)
HIGH_RESOURCE = ("en", "de", "es", "ru", "zh")
MLQA_R_DIR = "../shared/data/mlqa-r"
XQUAD_R_DIR = "../shared/data/xquad-r"
XQUAD_R_ALL = dict(name="xquad-r", type="xquad-r", path=XQUAD_R_DIR, fold="all")
MLQA_R_ALL = dict(name="mlqa-r", type="mlqa-r", path=MLQA_R_DIR, fold="all")
# Each direction: its training data, how its articles are cut (no test fold: the other
# benchmark is the test) and the benchmark it is evaluated on.  MLQA-R's 520 article units:
# 442 train / 78 dev; XQuAD-R's 48 articles: 40 train / 8 dev.
DIRECTIONS = {
    "A": dict(dataset_dir=MLQA_R_DIR, languages=("ar", "de", "en", "es", "hi", "vi", "zh"),
              split_sizes=(0.85, 0.15, 0.0), evaluation=XQUAD_R_ALL),
    "B": dict(dataset_dir=XQUAD_R_DIR,
              languages=("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"),
              split_sizes=(40, 8, 0), evaluation=MLQA_R_ALL),
}


def apply_direction(c, name: str, languages=None) -> None:
    """Points config `c` at direction `name`'s training data, folds and evaluation benchmark."""
    d = DIRECTIONS[name]
    c.data.dataset_dir = d["dataset_dir"]
    c.data.languages = tuple(languages or d["languages"])
    c.data.split_sizes = d["split_sizes"]
    c.eval.datasets = (dict(d["evaluation"], languages=tuple(languages))
                       if languages else dict(d["evaluation"]),)
    c.eval.every_datasets = ()


def _recipe(c) -> None:
    """The base recipe on top of configs/paper_cpu.py (see the module docstring)."""
    c.data.query_max_length = 40
    c.data.passage_max_length = 120
    c.data.mono_schedule = "exact"
    c.loss.temperature = 0.01
    c.optim.learning_rate = 1e-5
    c.optim.warmup_from_zero = False
    c.train.log_every = 1
    c.train.checkpoint_every = 10
    c.train.keep_checkpoints = 1
    c.train.select = "map"
    c.train.select_at_start = True
    c.eval.every_steps = 0
    c.eval.progress = False


def _experiment() -> ml_collections.ConfigDict:
    e = tradeoff._experiment()
    e.samplers = ("mono", "hybrid")
    e.alpha = 0.5
    e.seeds = SEEDS_A
    e.seeds_b = SEEDS_B        # the third edition's report reads the sibling grids with these
    e.arm_seeds = ARM_SEEDS
    e.sweep_alphas = ()
    e.sweep_seeds = ()
    e.high_resource = HIGH_RESOURCE
    e.delta = 0.007
    e.edition = "third"
    e.report_name = "tradeoff3.md"
    e.machine = "2 CPU cores (AMD EPYC)"
    e.cpu_cores = 2
    e.deviations = ()
    e.protocol = PROTOCOL
    e.protocol_sha256 = PROTOCOL_SHA256
    # The pilot's tables beside the main grid's workdir W: "<variant>:<file>" is
    # W-<variant>/report/<file> (hybrid_jax/study/third_grids.py, read_pilot).
    e.pilot_tables = ("pilot:tradeoff_pilot_tables.json",
                      "pilot-seeds:tradeoff_pilot_seeds_tables.json")
    e.registered_setting = REGISTERED_SETTING
    return e


def _budget(c, steps: int = 20) -> None:
    """Batch 32 through GradCache 2 x 16 at `steps` steps: a 10% warm-up, linear decay to 0, dev
    selection at step 0 and every quarter of the budget.  On a shared 2-core CPU one step of
    batch 64 with a hard negative took about 70 s, so the pilot took batch 32 and 20 steps (a
    run near 10 minutes with its five dev scorings) and the grids keep its shapes."""
    c.data.global_batch_size = 32
    c.optim.grad_accum_steps = 2
    c.train.num_steps = steps
    c.optim.warmup_steps = max(1, steps // 10)
    c.train.select_every = max(1, steps // 4)


def _grid(c, arg: str) -> None:
    """The registered recipe and the grid of variant `arg` (the module docstring)."""
    from hybrid_jax.study.pilot import apply_overrides, parse_setting

    name, overrides = parse_setting(next(s for s in PILOT_SETTINGS
                                         if s.split(":")[0] == REGISTERED_SETTING))
    apply_overrides(c, overrides, f"configs/tradeoff3.py: {name}")
    e = c.experiment
    _budget(c, {"budget10": 10, "budget80": 80}.get(arg, 20))
    if arg == "":
        e.sweep_alphas = (0.0, 0.25, 0.75)   # with alpha 0.5 and 1 of the main grid
        e.sweep_seeds = DOSE_SEEDS
    elif arg == "B":
        e.seeds = SEEDS_B
        e.high_resource = ("en", "de", "es", "zh")
    else:
        e.seeds = ARM_SEEDS
        e.zero_shot = arg == "weak"  # the others start from the main grid's zero-shot model
        if arg.startswith("fraction"):
            c.data.train_fraction = int(arg[len("fraction"):]) / 100
        if arg == "weak":
            c.model.reinit_top_layers = 2
    e.report_name = f"tradeoff3{'-' + arg if arg else ''}.md"
    if arg == "":
        _main_report(e)


def _main_report(e) -> None:
    """What the main grid's report (docs/tradeoff.md, the study's answer) says around its
    numbers: the earlier editions as appendices, how its wall times read, the deviations."""
    e.report_name = "tradeoff.md"
    e.see_also = (
        f"{PROTOCOL.split('/')[-1]}|the registered protocol",
        "tradeoff_pilot.md|the recipe pilot",
        "tradeoff_second_edition.md|the second edition (appendix: the paper's recipe, which "
        "lowered the starting model's accuracy)",
        "tradeoff_first_edition.md|the first edition (appendix)",
        "tradeoff_gpu100.md|the second edition's grid at the paper's batch of 100 on one H200")
    e.compute_note = (
        "Wall times include pauses and shared cores: hybrid-a0.5-s1 was stopped for about 75 "
        "minutes, direction B's mono-s0 and the main grid's cross-s0 for about 12 minutes each, "
        "hybrid-a0.75-s3 for about 24, and the main grid's first runs shared the cores with "
        "other work. A trained run took 381-436 s on otherwise idle cores "
        "(results/tradeoff3/README.md).")
    e.deviations = (
        "Every run had a process of its own (`python -m hybrid_jax.study ... --only <run>`, in "
        "the order of `launch/tradeoff3.sh`, from a checkout of the registration commit), not "
        "one `launch/tradeoff3.sh` invocation per stage: in one process the driver's resident "
        "memory grew from 3.0 GB to 6.7 GB over the first four runs, on a 24 GB machine. The "
        "code, configs and runs are the registered ones.",)


# The pilot's factors, one at a time from the base: "<setting>: <key>=<value>; ..." (config
# overrides of the base; hybrid_jax/study/pilot.py parses them).
PILOT_SETTINGS = (
    "base:",
    "temp0.05: loss.temperature=0.05",
    "temp0.02: loss.temperature=0.02",
    # Learnable from 0.01; the cap on 1 / temperature at 200 lets it move both ways.
    "temp-learned: loss.learn_temperature=True; loss.max_logit_scale=200.0",
    "lr3e-5: optim.learning_rate=3e-5",
    "no-warmup: optim.warmup_steps=0",
    "words-trained: optim.freeze_word_embeddings=False",
    "no-hard-negatives: data.hard_negatives=0",
)
# Most informative first: the base's X-X-mono and hybrid (criteria a and b), then X-X-mono under
# each factor (criterion a is the one a recipe fails: every condition of the second edition lost
# mono mAP), the base's X-Y (criterion b), then hybrid under each factor.
PILOT_RUNS = (
    "base:mono", "base:hybrid", "temp0.05:mono", "temp0.02:mono", "temp-learned:mono",
    "lr3e-5:mono", "no-warmup:mono", "no-hard-negatives:mono", "base:cross",
    "temp0.02:hybrid", "temp-learned:hybrid", "lr3e-5:hybrid", "temp0.05:hybrid",
    "no-warmup:hybrid", "no-hard-negatives:hybrid", "words-trained:mono",
    "words-trained:hybrid")


# The seed replication, most needed first: the pairs (X-X-mono, hybrid) of the leading setting
# by seed for the variance components, its X-Y for criterion (b), the base on a second seed.
PILOT_SEED_RUNS = (
    "lr3e-5:mono@1", "lr3e-5:hybrid@1", "lr3e-5:mono@0", "lr3e-5:hybrid@0", "lr3e-5:mono@2",
    "lr3e-5:hybrid@2", "lr3e-5:cross@0", "base:mono@1", "base:hybrid@1", "lr3e-5:mono@3",
    "lr3e-5:hybrid@3")


def _power() -> ml_collections.ConfigDict:
    """The primary endpoint's power analysis (hybrid_jax/study/pilot_power.py): its difference
    on the dev fold's high-resource languages (MLQA-R has no ru), scaled to all of XQuAD-R."""
    return ml_collections.ConfigDict(dict(
        direction="A", setting="lr3e-5", languages=("de", "en", "es", "zh"), metric="map@20",
        effect=0.007, margin=0.007, power=0.8, alpha=0.05, test_clusters=1190,
        confidence=0.8))


def _pilot() -> ml_collections.ConfigDict:
    p = ml_collections.ConfigDict()
    p.directions = ("A",)
    p.direction_data = {name: {k: v for k, v in d.items() if k != "evaluation"}
                        for name, d in DIRECTIONS.items()}
    p.settings = PILOT_SETTINGS
    p.runs = PILOT_RUNS
    p.languages = ()        # () = each direction's languages (the tiny variant: en + de)
    p.seed = 0
    p.alpha = 0.5
    p.clear_rise = 0.01     # criterion (b): a rise of at least this much mAP@20 over the start
    p.keep_weights = False  # delete a finished run's checkpoints (the pilot reads metrics.jsonl)
    return p


def get_config(arg=None):
    arg = arg or ""
    if arg not in VARIANTS:
        raise ValueError(f"configs/tradeoff3.py: unknown variant {arg!r} "
                         f"({', '.join(VARIANTS[1:])})")
    c = paper_cpu.get_config()
    c.data.draw = "permutation"  # the draw every committed run of the study was made with
    _recipe(c)
    c.experiment = _experiment()
    apply_direction(c, "B" if arg == "B" else "A")
    if arg in GRIDS:
        _grid(c, arg)
    if arg in ("pilot", "pilot-seeds", "tiny"):
        c.experiment.protocol = ""
        c.eval.datasets = ()  # dev data only: the pilot never scores a test question
        c.experiment.pilot = _pilot()
        _budget(c)
        c.experiment.report_name = "tradeoff_pilot_tables.md"
    if arg == "pilot-seeds":
        c.experiment.pilot.settings = tuple(s for s in PILOT_SETTINGS
                                            if s.split(":")[0] in ("base", "lr3e-5"))
        c.experiment.pilot.runs = PILOT_SEED_RUNS
        c.train.select_per_query = True
        c.experiment.report_name = "tradeoff_pilot_seeds_tables.md"
        c.experiment.pilot.power = _power()
    if arg == "tiny":
        _tiny(c)
    return c


def _tiny(c) -> None:
    tradeoff.tiny_model(c)
    apply_direction(c, "A", tradeoff.TINY_LANGUAGES)
    c.eval.datasets = ()
    c.optim.grad_accum_steps = 2
    c.optim.warmup_steps = 1
    c.train.num_steps = 4
    c.train.select_every = 2
    p = c.experiment.pilot
    p.directions = ("A", "B")
    p.settings = ("base:", "temp0.05: loss.temperature=0.05")
    p.runs = ("base:mono", "base:hybrid")
    p.languages = tradeoff.TINY_LANGUAGES
    c.train.select_per_query = True
