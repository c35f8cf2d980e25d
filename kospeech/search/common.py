"""Bookkeeping shared by the two prefix beams (CTC prefix beam search and transducer modified
beam search): ``K`` token prefixes per utterance, as a ``(B, K, L)`` tensor padded with -1 with
their lengths ``plen`` (B, K) and last tokens ``last`` (B, K; -1 for the empty prefix).

Each step a beam slot takes a parent ``parent_k`` (B, K) and, where ``emit``, appends ``tok``;
utterances past their last frame (``active`` (B, 1) False) keep everything unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from kospeech.search import NEG_INF, Hypothesis, child_matrix, pad_like, where_state


def merge_extensions(
    ext: torch.Tensor, prefixes: torch.Tensor, plen: torch.Tensor, last: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Extensions ``k + c`` that spell a prefix ``j`` already in the beam (the two ways of
    reaching one sequence): ext (B, K, V) scores of the one-token extensions, valid (B, K)
    the live parents -> the log-sum of those extensions per ``j`` (B, K; -inf where none), to
    be added to ``j``, and ``ext`` with them ruled out."""
    B, K, V = ext.shape
    child = child_matrix(prefixes, plen) & valid.unsqueeze(1)  # (B, K parent, K child)
    idx = last.clamp(min=0).unsqueeze(1).expand(B, K, K)  # token of child j, per parent k
    into = ext.gather(2, idx).masked_fill(~child, NEG_INF).logsumexp(1)
    hits = torch.zeros(B, K, V, device=ext.device).scatter_add_(2, idx, child.float())
    return into, ext.masked_fill(hits > 0, NEG_INF)


def extend_prefixes(
    prefixes: torch.Tensor,
    plen: torch.Tensor,
    parent_k: torch.Tensor,
    tok: torch.Tensor,
    emit: torch.Tensor,
    active: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prefixes and their lengths after the step (``tok`` is ignored where not ``emit``)."""
    new_prefixes = prefixes.gather(1, parent_k.unsqueeze(-1).expand(-1, -1, prefixes.size(-1)))
    new_plen = plen.gather(1, parent_k)
    if bool((emit & active).any()):
        new_prefixes = torch.nn.functional.pad(new_prefixes, (0, 1), value=-1)
        prefixes = torch.nn.functional.pad(prefixes, (0, 1), value=-1)
        pos = new_plen.unsqueeze(-1)
        cur = new_prefixes.gather(2, pos)
        new_prefixes = new_prefixes.scatter(2, pos, torch.where(emit.unsqueeze(-1), tok.unsqueeze(-1), cur))
    new_plen = new_plen + emit.long()
    return torch.where(active.unsqueeze(-1), new_prefixes, prefixes), torch.where(active, new_plen, plen)


def advance_lm(
    lm: Any,
    lm_logp: torch.Tensor,
    lm_state: Any,
    lm_score: torch.Tensor,
    parent: torch.Tensor,
    parent_k: torch.Tensor,
    tok: torch.Tensor,
    emit: torch.Tensor,
    active: torch.Tensor,
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """Shallow-fusion LM after the step: its next-token log-probs (B*K, V) and state follow the
    parents (rows ``parent`` (B*K,)) and take one LM step where a token was emitted;
    ``lm_score`` (B, K) adds the LM log-prob of each emitted token."""
    B, K = tok.shape
    tok = tok.clamp(min=0)
    logp = lm_logp.index_select(0, parent)
    state = lm.select_state(lm_state, parent)
    gained = logp.gather(1, tok.view(-1, 1)).view(B, K)
    new_score = lm_score.gather(1, parent_k) + torch.where(emit, gained, torch.zeros_like(gained))
    # the LM reads a token only in the rows that emitted one (often few of them per frame)
    rows = (emit & active).view(-1).nonzero().squeeze(1)
    if rows.numel():
        s_logp, s_state = lm.step(tok.view(-1).index_select(0, rows), lm.select_state(state, rows))
        logp = logp.index_copy(0, rows, s_logp.to(logp.dtype))
        state = tuple(
            pad_like(old, (old.size(0), *new.shape[1:])).index_copy(0, rows, new) for old, new in zip(state, s_state)
        )
    keep = active.expand(B, K).reshape(-1)
    return (
        torch.where(keep.unsqueeze(1), logp, lm_logp),
        where_state(keep, state, lm_state),
        torch.where(active, new_score, lm_score),
    )


def nbest(
    final: torch.Tensor, prefixes: torch.Tensor, plen: torch.Tensor, parts: dict[str, torch.Tensor]
) -> list[list[Hypothesis]]:
    """The finite-scored prefixes of each utterance, best ``final`` (B, K) score first, with the
    score ``parts`` (each (B, K))."""
    results = []
    for b in range(final.size(0)):
        hyps = []
        for k in final[b].argsort(descending=True).tolist():
            if not torch.isfinite(final[b, k]):
                continue
            toks = prefixes[b, k, : int(plen[b, k])].tolist()
            hyps.append(Hypothesis(toks, float(final[b, k]), {name: float(v[b, k]) for name, v in parts.items()}))
        results.append(hyps)
    return results
