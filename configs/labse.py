"""The paper's LaBSE setting (arXiv 2408.10536): as xlmr_base (batch 100, lr 3e-5, weight decay
0.01, alpha 0.5) with sentence-transformers/LaBSE (CLS pooling + pooler, from its config).
Variants: ':mono', ':cross', ':hybrid' (default)."""
from configs import xlmr_base


def get_config(arg=None):
    c = xlmr_base.get_config(arg)
    c.model.spec = "hf:sentence-transformers/LaBSE"
    return c
