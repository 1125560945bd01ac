"""Log-likelihoods of answers after contexts, computed once per distinct token: the prefix all contexts share, each
context, and each distinct answer prefix (a token trie with tree attention). The evaluator's `choice` and
`preference` tasks score through `loglikelihoods`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import TunerError


def encode_pair(tokenizer, context: str, answer: str) -> tuple[list[int], list[int]]:
    """(context token ids, answer token ids) as lm-evaluation-harness encodes them: trailing spaces of the context
    move to the answer, the whole string is encoded once, and the answer is what follows the context's tokens."""
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, answer = context[:-spaces], context[-spaces:] + answer
    whole = tokenizer(context + answer, add_special_tokens=False)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    return whole[: len(context_ids)], whole[len(context_ids) :]


def model_device(model):
    """The device of a model's first parameter (where its inputs go)."""
    return next(model.parameters()).device


# Answer-prefix tokens one scoring pass may hold over all its rows: a pass keeps at most this many positions'
# logits (positions x vocabulary), however many choices there are.
TOKEN_BUDGET = 1024


@dataclass
class _Trie:
    """The answers of one context as a token trie: its nodes are the distinct answer prefixes, each fed to the model
    once after the context, and `answers` says where each answer's tokens are scored, as (pair index,
    [(slot, token)]): slot 0 is the context's last position, slot 1 + i the i-th node. A node's parent comes
    before it (-1: the context)."""

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    answers: list[tuple[int, list[tuple[int, int]]]] = field(default_factory=list)


def _trie(targets: list[tuple[int, list[int]]]) -> _Trie:
    """The trie of (pair index, answer token ids) targets; an answer of one token needs no node."""
    trie, index = _Trie(), {}
    for pair, ids in targets:
        for end in range(1, len(ids)):
            prefix = tuple(ids[:end])
            if prefix not in index:
                index[prefix] = len(trie.tokens)
                trie.tokens.append(prefix[-1])
                trie.parents.append(index[prefix[:-1]] if end > 1 else -1)
                trie.depths.append(end)
        trie.answers.append(
            (pair, [(0, ids[0])] + [(index[tuple(ids[:end])] + 1, ids[end]) for end in range(1, len(ids))])
        )
    return trie


def _context_inputs(contexts: list[tuple[int, ...]], pad: int):
    """Contexts left-padded to the longest: input ids, the 2D attention mask and position ids."""
    import torch

    width = len(contexts[0])
    input_ids = torch.full((len(contexts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for row, context in enumerate(contexts):
        input_ids[row, width - len(context) :] = torch.tensor(context)
        mask[row, width - len(context) :] = 1
    return input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def _shared_prefix(contexts: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The token prefix every context starts with (a system prompt, the same few-shot examples), leaving each context
    at least its last token of its own, whose position scores the answers."""
    import os

    if not contexts:
        return ()
    shared = tuple(os.path.commonprefix(contexts))
    return shared[: min(len(context) for context in contexts) - 1]


def _prefix_cache(model, prefix: tuple[int, ...], device):
    """The key/value cache of the shared prefix, computed once for the whole run; `None` without a prefix."""
    import torch

    if not prefix:
        return None
    return model(input_ids=torch.tensor([prefix], device=device), use_cache=True).past_key_values


def _batch_cache(model, prefix_cache, rows: int):
    """A fresh cache holding the shared prefix for each of `rows` rows: views of the one computed, which the forward
    pass extends (by concatenation) without writing to them."""
    from transformers import DynamicCache

    return DynamicCache(
        [(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1)) for keys, values, *_ in prefix_cache],
        config=model.config,
    )


def _node_inputs(tries: list[_Trie], mask, start: int, end: int, pad: int, dtype):
    """Nodes start..end-1 of each row's trie, fed after the context and the nodes before them (in the key/value
    cache): input ids, position ids (the context's length plus the node's depth), and an additive attention mask
    in which a node sees the context and its own ancestors and padding sees only itself."""
    import torch

    rows, width = mask.shape
    allowed = torch.zeros((rows, end - start, width + end), dtype=torch.bool)
    allowed[:, :, :width] = mask[:, None, :].bool()
    input_ids = torch.full((rows, end - start), pad, dtype=torch.long)
    positions = torch.zeros((rows, end - start), dtype=torch.long)
    for row, trie in enumerate(tries):
        seen = [set() for _ in trie.tokens[:end]]  # ancestors-or-self of each node, as node indices
        for node in range(min(end, len(trie.tokens))):
            parent = trie.parents[node]
            seen[node] = (seen[parent] if parent >= 0 else set()) | {node}
            if node < start:
                continue
            input_ids[row, node - start] = trie.tokens[node]
            positions[row, node - start] = int(mask[row].sum()) - 1 + trie.depths[node]
            allowed[row, node - start, [width + n for n in seen[node]]] = True
        for node in range(max(start, len(trie.tokens)), end):
            allowed[row, node - start, :] = False
            allowed[row, node - start, width + node] = True  # padding: itself only, so no row is wholly masked
    additive = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return input_ids, positions, additive[:, None]


def loglikelihoods(
    model,
    tokenizer,
    pairs: list[tuple[str, str]],
    batch_size: int = 16,
    max_length: int | None = None,
    on_scored: Callable[[list[int]], None] | None = None,
    tree: bool | None = None,
) -> list[float]:
    """Sum of log-probabilities of each continuation given its context, for (context, continuation) pairs.

    A context runs once, however many answers are scored after it, and the token prefix all contexts share (a
    system prompt, the same few-shot examples) runs once for the whole call: its key/value cache is put before
    every batch's own tokens. Each distinct answer prefix also runs once: the
    answers of a context form a token trie whose nodes are fed after the context through its key/value cache, each
    attending to the context and to its own ancestors (tree attention), so `card_arrival` and
    `card_delivery_estimate` share the tokens of `card_`. The context's last position scores every answer's first
    token and each node the token after it. Contexts are sorted by length and left-padded per batch; nodes go in
    passes of at most TOKEN_BUDGET positions over the batch, so the logits held are bounded by that, not by the
    number of choices. Where the model cannot take that mask (flash attention, a sliding window shorter than the
    longest input: `tree_attention`), each pair runs whole instead. `on_scored` hears the pair indices each batch
    finished. `tree=False` runs each pair whole on any model (the reference the GPU check holds the tree to).
    """
    import torch

    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for index, (context, answer) in enumerate(pairs):
        context_ids, answer_ids = encode_pair(tokenizer, context, answer)
        if not answer_ids:
            raise TunerError(f"the answer {answer!r} encodes to no tokens; choices must be non-empty text.")
        keep_context = max(1, max_length - len(answer_ids) + 1)  # over-long inputs lose their start, as in lm-eval
        groups.setdefault(tuple(context_ids[-keep_context:]), []).append((index, answer_ids))
    if tree is False or not tree_attention(model, groups):
        return _one_pass_each(model, tokenizer, groups, len(pairs), batch_size, on_scored)
    ordered = sorted(groups.items(), key=lambda item: -len(item[0]))
    scores = [0.0] * len(pairs)
    device = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefix = _shared_prefix([context for context, _ in ordered])
    model.eval()
    with torch.inference_mode():
        prefix_cache = _prefix_cache(model, prefix, device)
        for start in range(0, len(ordered), batch_size):
            batch = ordered[start : start + batch_size]
            tries = [_trie(targets) for _, targets in batch]
            input_ids, mask, positions = _context_inputs([context[len(prefix) :] for context, _ in batch], pad)
            if prefix_cache is not None:  # each row's own tokens follow the prefix's, padding between them
                mask = torch.cat([torch.ones((len(batch), len(prefix)), dtype=mask.dtype), mask], dim=1)
                positions = positions + len(prefix)
            cache = _batch_cache(model, prefix_cache, len(batch)) if prefix_cache is not None else None
            nodes = max(len(trie.tokens) for trie in tries)
            output = model(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                past_key_values=cache,
                use_cache=nodes > 0 or cache is not None,
                logits_to_keep=1,
            )
            wanted: dict[int, list[tuple[int, int, int]]] = {}  # slot -> (row, pair, token)
            for row, trie in enumerate(tries):
                for pair, places in trie.answers:
                    for slot, token in places:
                        wanted.setdefault(slot, []).append((row, pair, token))
            _add_scores(output.logits[:, -1], wanted.get(0, []), scores, device)
            step = max(1, TOKEN_BUDGET // len(batch))
            for first in range(0, nodes, step):
                last = min(nodes, first + step)
                ids, node_positions, node_mask = _node_inputs(tries, mask, first, last, pad, model.dtype)
                logits = model(
                    input_ids=ids.to(device),
                    attention_mask=node_mask.to(device),
                    position_ids=node_positions.to(device),
                    past_key_values=output.past_key_values,
                    use_cache=True,
                ).logits
                for n in range(last - first):
                    _add_scores(logits[:, n], wanted.get(1 + first + n, []), scores, device)
            if on_scored is not None:
                on_scored([pair for trie in tries for pair, _ in trie.answers])
    return scores


def tree_attention(model, groups: dict[tuple[int, ...], list[tuple[int, list[int]]]]) -> bool:
    """Whether the model can take the trie's 4-D tree mask after a shared key/value cache: not under flash
    attention (its kernels read any mask as 2-D padding), and not once a context with its answer outgrows a
    sliding attention window (Mistral v0.1, Phi-3, Gemma 2/3: their caches keep only the window's keys)."""
    # transformers has a setter of the attention a loaded model runs (`set_attn_implementation`) and no getter.
    if "flash" in str(getattr(model.config, "_attn_implementation", "") or ""):
        return False
    window = getattr(model.config, "sliding_window", None)
    longest = max(
        (len(context) + max(len(ids) for _, ids in targets) for context, targets in groups.items()), default=0
    )
    return not (isinstance(window, int) and longest > window)


def _one_pass_each(model, tokenizer, groups, count: int, batch_size: int, on_scored) -> list[float]:
    """The plain path: each context with each answer as one left-padded sequence with a 2-D padding mask, which
    every attention kernel and sliding window honours; the logits kept are the answers' positions alone."""
    import torch

    items = sorted(
        ((context, index, ids) for context, targets in groups.items() for index, ids in targets),
        key=lambda item: -(len(item[0]) + len(item[2])),
    )
    scores = [0.0] * count
    device = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            # the last answer token is only predicted, never read: a sequence stays within max_length, as in lm-eval
            sequences = [context + tuple(ids[:-1]) for context, _, ids in batch]
            input_ids, mask, positions = _context_inputs(sequences, pad)
            keep = max(len(ids) for _, _, ids in batch)
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                logits_to_keep=keep,
            ).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, (_, index, ids) in enumerate(batch):
                places = range(keep - len(ids), keep)  # the last len(ids) positions predict the answer's tokens
                scores[index] = float(sum(logprobs[row, place, token] for place, token in zip(places, ids)))
            if on_scored is not None:
                on_scored([index for _, index, _ in batch])
    return scores


def _add_scores(logits, wanted: list[tuple[int, int, int]], scores: list[float], device) -> None:
    """Add to answers' scores the log-probabilities, from one position's logits (rows x vocabulary), of the tokens
    `wanted` as (row, pair index, token)."""
    import torch

    if not wanted:
        return
    rows, pairs_of, tokens = (torch.tensor(column) for column in zip(*wanted))
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    for pair, value in zip(pairs_of.tolist(), logprobs[rows.to(device), tokens.to(device)].tolist()):
        scores[pair] += value
