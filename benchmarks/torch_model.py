"""The PyTorch side of the peer (benchmarks/torch_peer.py): loading our Hugging Face export,
sentence-transformers-style embedding, the contrastive loss with hard negatives, its gradient
directly or GradCache-style over micro-batches, and AdamW with the word embeddings frozen."""
from __future__ import annotations

# As losses.MASKED_LOGIT: finite (no inf - inf in log_softmax), exp() of it is exactly 0.
MASKED_LOGIT = -1e9
PAIR_INPUTS = ("query_ids", "query_mask", "passage_ids", "passage_mask")
NEGATIVE_INPUTS = ("negative_ids", "negative_mask", "negative_valid")


def load_model(a):
    import torch
    import transformers
    from transformers import AutoModel

    transformers.logging.set_verbosity_error()  # the load report (no pooler: unused) is noise
    transformers.utils.logging.disable_progress_bar()  # and so is the weight-loading bar
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    return AutoModel.from_pretrained(a.model_dir, hidden_dropout_prob=a.dropout,
                                     attention_probs_dropout_prob=a.dropout)


def embed(model, ids, mask, autocast: bool):
    """Mean pooling + L2 normalisation (our `mean` pooling); pooled in float32 under autocast
    too, as our encoder pools in float32 whatever its compute dtype."""
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    hidden = hidden.float()
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)



def load_batches(path: str) -> list:
    """Per-step dicts of torch tensors, pair axis first ([b, ...]): ids and masks int64,
    negative_valid bool.  The negative keys only when the file has them."""
    import numpy as np
    import torch

    data = np.load(path)
    keys = PAIR_INPUTS + (NEGATIVE_INPUTS if "negative_ids" in data else ())
    batches = []
    for i in range(data["query_ids"].shape[0]):
        batch = {k: torch.from_numpy(np.ascontiguousarray(data[k][i]).astype(np.int64))
                 for k in keys}
        if "negative_valid" in batch:
            batch["negative_valid"] = batch["negative_valid"] > 0
        batches.append(batch)
    return batches


def encode_batch(model, batch: dict, autocast: bool) -> dict:
    """{'q', 'p'} [b, D] and, with hard negatives, 'n' [b * H, D] (pair-major, as ours: rows
    i * H .. i * H + H - 1 are pair i's), the negatives through the passage tower."""
    out = {"q": embed(model, batch["query_ids"], batch["query_mask"], autocast),
           "p": embed(model, batch["passage_ids"], batch["passage_mask"], autocast)}
    if "negative_ids" in batch:
        ids, mask = batch["negative_ids"], batch["negative_mask"]
        out["n"] = embed(model, ids.reshape(-1, ids.shape[-1]),
                          mask.reshape(-1, mask.shape[-1]), autocast)
    return out


def contrastive_loss(emb: dict, negative_valid, temperature: float):
    """Cross-entropy over [in-batch positives ; every hard negative of the batch] (query ->
    passage only), padded negatives' logits set to MASKED_LOGIT (no probability, no gradient)."""
    import torch

    q = emb["q"]
    logits = q @ emb["p"].T / temperature
    if "n" in emb:
        neg = q @ emb["n"].T / temperature
        if negative_valid is not None:
            neg = neg.masked_fill(~negative_valid.reshape(1, -1), MASKED_LOGIT)
        logits = torch.cat([logits, neg], dim=1)
    return torch.nn.functional.cross_entropy(logits.float(), torch.arange(len(q)))


def grads_direct(model, batch: dict, a) -> float:
    emb = encode_batch(model, batch, a.autocast)
    loss = contrastive_loss(emb, batch.get("negative_valid"), a.temperature)
    loss.backward()
    return float(loss.detach())


def grads_cached(model, batch: dict, a) -> float:
    """GradCache (sentence-transformers' CachedMultipleNegativesRankingLoss): the embeddings of
    K contiguous micro-batches without gradients, the loss and its gradient with respect to them
    on the full batch (so every query still sees every negative), then each micro-batch
    re-encoded with gradients and back-propagated with its slice of those gradients.  The
    parameter gradient is the full-batch one; activations are held for one micro-batch only."""
    import torch

    k = a.micro_batches
    b = batch["query_ids"].shape[0]
    # Pair axis first everywhere, so a row slice carries each pair's negatives along.
    chunks = [{key: v[j * b // k:(j + 1) * b // k] for key, v in batch.items()
               if key != "negative_valid"} for j in range(k)]
    rng_states, parts = [], []
    with torch.no_grad():
        for chunk in chunks:
            rng_states.append(torch.get_rng_state())
            parts.append(encode_batch(model, chunk, a.autocast))
    emb = {key: torch.cat([p[key] for p in parts]).requires_grad_() for key in parts[0]}
    loss = contrastive_loss(emb, batch.get("negative_valid"), a.temperature)
    loss.backward()
    grads = {key: e.grad.split(e.shape[0] // k) for key, e in emb.items()}
    for j, (chunk, state) in enumerate(zip(chunks, rng_states)):
        torch.set_rng_state(state)  # the same dropout masks as this chunk's no-grad pass
        out = encode_batch(model, chunk, a.autocast)
        torch.autograd.backward([out[key] for key in out], [grads[key][j] for key in out])
    return float(loss.detach())


def optimizer(model, a):
    """AdamW over the trainable parameters (word embeddings frozen), no decay on biases and
    LayerNorm weights -> (optimizer, trainable parameter list)."""
    import torch

    model.embeddings.word_embeddings.weight.requires_grad_(False)
    decay, no_decay = [], []
    for name, w in model.named_parameters():
        if w.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(w)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.learning_rate, eps=1e-8)
    return opt, decay + no_decay
