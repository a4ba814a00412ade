"""Source readers of the prepare step, by name (`--source <name>:<path>`): each one streams its
source into a writer.StoreWriter. A reader in a new module registers itself with
`@READERS.register("name")` (base.py) and is usable once imported; the built-in ones are
imported here."""
from hybrid_jax.data.store.readers import lareqa, mmarco, pairs, tevatron  # noqa: F401  (register)
from hybrid_jax.data.store.readers.base import READERS, Options, parse_source  # noqa: F401
