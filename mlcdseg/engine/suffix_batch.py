"""Expressions' suffixes run as one batch on an encoded image's key/value cache.

Each suffix (question, assistant opening, forced answer if any) follows the same cached prefix
(system turn, user opening, image tokens). The suffixes are padded into one block of columns
after the prefix; a teacher-forced batch reads its `[SEG]` states from that block, a greedy one
then decodes step by step until each row answers `[SEG]` or stops.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .llm import KvCache, Qwen2Decoder


class SuffixBatch:
    """Suffixes left-padded into one block after the shared prefix; greedy steps after that.

    Cache columns: [prefix | padded suffixes | generated steps]; each row's positions count only
    its own tokens, and a boolean mask hides padding and other rows' finished steps.
    """

    def __init__(
        self,
        llm: Qwen2Decoder,
        prefix_cache: KvCache,
        suffixes: Sequence[Sequence[int]],
        max_new: int,
        width: int = 0,
        cache: KvCache | None = None,
    ) -> None:
        """`prefix_cache`: the image's 1-row cache; `max_new`: greedy steps room is made for;
        `width`: pad to at least this many columns; `cache`: use this working cache (a CUDA
        graph's, already holding the prefix) instead of a fresh copy of the prefix."""
        self.llm = llm
        self.max_new = max_new
        device = prefix_cache.keys[0].device
        self.prefix_length = prefix_cache.length
        self.width = width = max(width, *(len(suffix) for suffix in suffixes))
        lengths = torch.tensor([len(suffix) for suffix in suffixes])
        # Built on the host from the known ids, moved once: no device-to-host syncs before decoding.
        tokens = torch.zeros(len(suffixes), width, dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            tokens[row, width - len(suffix):] = torch.tensor(list(suffix), dtype=torch.long)
        self.host_tokens = tokens
        self.host_valid = torch.arange(width) >= (width - lengths)[:, None]
        self.tokens, self.lengths = tokens.to(device), lengths.to(device)
        self.cache = cache if cache is not None else prefix_cache.expanded(len(suffixes), width + max_new)
        self.key_valid = torch.zeros(len(suffixes), self.cache.capacity, dtype=torch.bool)
        self.key_valid[:, : self.prefix_length] = True
        self.key_valid[:, self.prefix_length : self.prefix_length + width] = self.host_valid
        self.key_valid = self.key_valid.to(device)

    def load_inputs(self, other: SuffixBatch) -> None:
        """Copy another batch's device inputs (same shape) into this one's tensors, in place."""
        self.tokens.copy_(other.tokens)
        self.lengths.copy_(other.lengths)
        self.key_valid.copy_(other.key_valid)

    def prefill(self) -> torch.Tensor:
        """Hidden states (B, width, hidden) of the padded suffix block."""
        device = self.tokens.device
        total = self.prefix_length + self.width
        query_columns = torch.arange(self.prefix_length, total, device=device)
        causal = torch.arange(total, device=device)[None, :] <= query_columns[:, None]
        mask = (self.key_valid[:, None, :total] & causal[None]).unsqueeze(1)
        offsets = torch.arange(self.width, device=device) - (self.width - self.lengths)[:, None]
        positions = self.prefix_length + offsets.clamp(min=0)
        return self.llm(self.llm.embed_tokens(self.tokens), positions, self.cache, mask)

    def forced_answers(self, hidden: torch.Tensor, seg_id: int) -> tuple[list[list[int]], list[torch.Tensor]]:
        """The `[SEG]` rows of a teacher-forced suffix, in order; the answer is the suffix itself."""
        is_seg = (self.host_tokens == seg_id) & self.host_valid
        answers = [row[valid].tolist() for row, valid in zip(self.host_tokens, self.host_valid)]
        columns = [torch.nonzero(row)[:, 0].to(hidden.device) for row in is_seg]
        return answers, [hidden[row].index_select(0, index) for row, index in enumerate(columns)]

    def decode_greedy(
        self, last_hidden: torch.Tensor, seg_id: int, stop_ids: frozenset[int]
    ) -> tuple[list[list[int]], list[torch.Tensor]]:
        """Greedy decoding per row until `[SEG]` (whose state is kept), a stop token or `max_new` steps."""
        llm = self.llm
        batch = last_hidden.shape[0]
        empty = last_hidden.new_zeros(0, last_hidden.shape[-1])
        answers: list[list[int]] = [[] for _ in range(batch)]
        seg_states = [empty] * batch
        active = [True] * batch
        pending = llm.lm_head(last_hidden).argmax(-1)
        for step in range(self.max_new):
            for row, token in enumerate(pending.tolist()):
                if active[row]:
                    answers[row].append(token)
                    active[row] = token not in stop_ids
            if not any(active):
                break
            column = self.prefix_length + self.width + step
            self.key_valid[:, column] = torch.tensor(active, device=self.key_valid.device)
            positions = (self.prefix_length + self.lengths + step)[:, None]
            mask = self.key_valid[:, None, None, : column + 1]
            hidden = llm(llm.embed_tokens(pending[:, None]), positions, self.cache, mask)[:, 0]
            for row, token in enumerate(pending.tolist()):
                if active[row] and token == seg_id:
                    seg_states[row] = hidden[row : row + 1]
                    active[row] = False
            if not any(active):
                break
            pending = llm.lm_head(hidden).argmax(-1)
        return answers, seg_states
