"""A re-prompt on an encoded image replayed as a CUDA graph instead of ~1,000 kernel launches.

A re-prompt (one teacher-forced suffix of ~31 tokens on a cached image) is little GPU work: its
time is the host launching the decoder layers' kernels one by one. The first such call on an
image captures the suffix prefill as a CUDA graph over a working copy of the image's key/value
cache; later calls copy their tokens in and replay it. Suffixes are padded to a bucket width
(masked, exactly as in a batch), so one graph serves every expression of that image up to the
width. `SuffixGraphs` owns the graphs, per image and width, and drops an image's graphs when the
image itself is dropped. Off a GPU the same working-cache replay runs eagerly (no capture),
which is how the CPU tests check it.
"""

from __future__ import annotations

import logging
import weakref
from typing import Sequence

import torch

from .llm import KvCache, Qwen2Decoder
from .suffix_batch import SuffixBatch

logger = logging.getLogger(__name__)

#: Suffix widths are rounded up to a multiple of this, so similar expressions share a graph.
WIDTH_BUCKET = 32


def bucket_width(length: int) -> int:
    """The padded width a suffix of `length` tokens is replayed at."""
    return -(-length // WIDTH_BUCKET) * WIDTH_BUCKET


class SuffixGraph:
    """The prefill of one padded width on one encoded image, captured as a CUDA graph on CUDA.

    `template` is a batch of one at that width: its token, length and mask tensors are the
    graph's inputs, its cache the working copy the graph writes into. On another device nothing
    is captured and `replay` runs the template's prefill eagerly.
    """

    def __init__(self, template: SuffixBatch) -> None:
        self.template = template
        self.graph: torch.cuda.CUDAGraph | None = None
        device = template.tokens.device
        if device.type != "cuda":
            return
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up before capture (lazy initialisation, kernel selection)
                self._prefill()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.hidden = self._prefill()

    def _prefill(self) -> torch.Tensor:
        self.template.cache.length = self.template.prefix_length  # each replay writes the same columns
        return self.template.prefill()

    def replay(self, batch: SuffixBatch) -> torch.Tensor:
        """The prefill of `batch` (one suffix at this width, on this graph's working cache):
        (1, width, hidden), valid until the next replay."""
        self.template.load_inputs(batch)
        if self.graph is None:
            return self._prefill()
        self.graph.replay()
        return self.hidden


class SuffixGraphs:
    """The re-prompt graphs of the images an engine has encoded, by image and padded width.

    An image is named by its prefix cache (the 1-row key/value cache of its prompt prefix),
    held weakly: when the engine's image cache lets an image go, its graphs go with it. A
    capture that fails is logged once and turns this runner off (`failure` says why); callers
    then run their re-prompts without graphs.
    """

    def __init__(self) -> None:
        self._graphs: weakref.WeakKeyDictionary[KvCache, dict[int, SuffixGraph]] = weakref.WeakKeyDictionary()
        self.failure: str | None = None

    def prefill(
        self, llm: Qwen2Decoder, prefix_cache: KvCache, suffix: Sequence[int]
    ) -> tuple[SuffixBatch, torch.Tensor] | None:
        """One suffix's batch (for its layout) and its prefill, replayed from the image's graph
        at the suffix's bucket width (captured on first use); None when graphs are off after a
        failed capture."""
        if self.failure is not None:
            return None
        width = bucket_width(len(suffix))
        graphs = self._graphs.setdefault(prefix_cache, {})
        graph = graphs.get(width)
        if graph is None:
            try:
                graph = SuffixGraph(SuffixBatch(llm, prefix_cache, [[0] * width], 0))
            except RuntimeError as error:
                self.failure = str(error)
                logger.warning("CUDA graph capture failed (%s); re-prompts run without graphs", error)
                return None
            graphs[width] = graph
        batch = SuffixBatch(llm, prefix_cache, [suffix], 0, width=width, cache=graph.template.cache)
        return batch, graph.replay(batch)
