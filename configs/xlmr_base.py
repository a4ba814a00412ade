"""The paper's XLM-R base setting (arXiv 2408.10536): batch 100, AdamW lr 3e-5, weight decay 0.01,
hybrid batches with alpha 0.5, one hard negative per pair, the checkpoint of the lowest dev loss,
on XQuAD-R training articles; evaluated on the XQuAD-R test articles and on MLQA-R (zero-shot).
For a TPU or GPU host.

model.spec loads Hugging Face weights from a local directory or hub id; the paper mean-pools
XLM-R.  Variants: ':mono' (X-X), ':cross' (X-Y), ':hybrid' (default).
"""
from configs import default, paper_recipe


def get_config(arg=None):
    c = default.get_config(arg)
    c.model.spec = "hf:xlm-roberta-base"
    c.model.compute_dtype = "bfloat16"
    c.parallelism = "pmap"

    c.optim.learning_rate = 3e-5
    c.optim.weight_decay = 0.01
    c.optim.warmup_steps = 100
    c.optim.schedule = "linear"
    c.optim.freeze_word_embeddings = False

    c.data.global_batch_size = 100
    c.data.alpha = 0.5
    c.data.query_max_length = 64
    c.data.passage_max_length = 128

    c.train.num_steps = 3000
    c.train.log_every = 50
    c.train.checkpoint_every = 500

    c.eval.every_steps = 1000
    c.eval.batch_size = 256
    c.eval.max_length = 256
    paper_recipe.apply(c, select_every=250)
    c.train.select_batches = 16  # 512 dev pairs
    return c
