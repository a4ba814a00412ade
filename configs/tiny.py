"""A tiny random model on synthetic batches: for tests and smoke runs (seconds on a CPU)."""
from configs import default


def get_config(arg=None):
    c = default.get_config(arg)
    c.model.spec = "random:tiny"
    c.model.dropout = 0.0
    c.loss.temperature = 0.1
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 2
    c.optim.weight_decay = 0.0
    c.optim.freeze_word_embeddings = True
    c.train.num_steps = 8
    c.train.log_every = 2
    c.train.checkpoint_every = 4
    c.data.synthetic = True
    c.data.global_batch_size = 8
    c.data.query_max_length = 8
    c.data.passage_max_length = 12
    return c
