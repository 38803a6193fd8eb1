"""A re-prompt on an encoded image replayed as a CUDA graph instead of ~1,000 kernel launches.

A re-prompt (one teacher-forced suffix of ~31 tokens on a cached image) is little GPU work: its
time is the host launching the decoder layers' kernels one by one. The first such call on an
image captures the suffix prefill as a CUDA graph over a working copy of the image's key/value
cache; later calls copy their tokens in and replay it. Suffixes are left-padded to a bucket
width (masked, exactly as in a batch), so one graph serves every expression of that image up to
the width. The graph lives with the EncodedImage and goes when the image leaves the engine's
cache. Only CUDA, a batch of one and the teacher-forced path (force_seg) use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .engine import _SuffixBatch

#: Suffix widths are rounded up to a multiple of this, so similar expressions share a graph.
WIDTH_BUCKET = 32


def bucket_width(length: int) -> int:
    """The padded width a suffix of `length` tokens is replayed at."""
    return -(-length // WIDTH_BUCKET) * WIDTH_BUCKET


class SuffixGraph:
    """The captured prefill of one padded width on one encoded image (CUDA only).

    `template` is a batch of one at that width: its token, length and mask tensors are the
    graph's inputs, its cache the working copy the graph writes into.
    """

    def __init__(self, template: _SuffixBatch) -> None:
        self.template = template
        device = template.tokens.device
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

    def replay(self, batch: _SuffixBatch) -> torch.Tensor:
        """The prefill of `batch` (one suffix at this width): (1, width, hidden), valid until
        the next replay."""
        self.template.load_inputs(batch)
        self.graph.replay()
        return self.hidden

