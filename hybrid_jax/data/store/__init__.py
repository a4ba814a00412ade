"""The prepared corpus ("store"): every distinct text tokenized once, examples as id arrays.

`python -m hybrid_jax.prepare_data` writes it (prepare.py drives a reader per source into a
writer.StoreWriter); layout.py names the files and opens them as numpy memory maps. The format is
described in docs/data.md ("Preparing a corpus").
"""
