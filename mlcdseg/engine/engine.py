"""The native engine: encode an image once, then segment many expressions against it.

`encode_image` pays for the vision tower, the SAM image encoder and the LLM prefill of the
prompt prefix (system turn, user opening, image tokens); `segment` runs one batched prefill of
the expressions' suffixes on that key/value cache, then SAM's prompt encoder and mask decoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .checkpoint import load_weights
from .config import EngineConfig, read_engine_config, read_safetensors_shapes
from .errors import CheckpointMismatchError
from .image_cache import LruCache, image_key
from .llm import KvCache
from .network import MlcdSegNetwork
from .preprocessing import anyres_tiles, postprocess_masks, sam_input
from .projector import merge_tile_features
from .suffix_graph import SuffixGraph, bucket_width
from .prompting import DEFAULT_ANSWER, ChatmlPrompts, PromptCodec, load_tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedImage:
    """The expensive per-image state. Tensors live on the engine's device.

    size: (height, width) of the original image; sam_embedding: (1, C, g, g);
    sam_resized: (height, width) of the image inside SAM's padded square;
    prefix_cache: 1-row key/value cache of the prompt up to and including the image tokens;
    suffix_graphs: the re-prompt CUDA graphs captured on this image, by padded width.
    """

    size: tuple[int, int]
    sam_embedding: torch.Tensor
    sam_resized: tuple[int, int]
    prefix_cache: KvCache
    suffix_graphs: dict[int, SuffixGraph] = field(default_factory=dict, compare=False, repr=False)

    @property
    def prefix_length(self) -> int:
        return self.prefix_cache.length


@dataclass(frozen=True)
class Segmentation:
    """One expression's result.

    answer_ids: the tokens after the assistant opening (forced or generated);
    seg_hidden: float32 (N, hidden) last-layer states at the `[SEG]` tokens, after the final norm;
    mask_logits: float32 (N, H, W); masks: bool (N, H, W), N = 0 when the answer has no `[SEG]`.
    """

    answer_ids: list[int]
    answer: str
    seg_hidden: torch.Tensor
    mask_logits: torch.Tensor
    masks: np.ndarray


class NativeEngine:
    """SamPredictor-style MLCD-Seg: `encode_image` once, `segment` many times.

    use_cuda_graphs: on CUDA, replay a teacher-forced re-prompt (one expression) on an encoded
    image from a CUDA graph (mlcdseg.engine.suffix_graph) instead of launching every kernel.
    Off by default: it has not yet been run on a GPU (bench/engine_gpu.py measures and checks it).
    """

    def __init__(
        self,
        network: MlcdSegNetwork,
        prompts: PromptCodec,
        answer: str = DEFAULT_ANSWER,
        max_new_tokens: int = 32,
        cache_size: int = 8,
        use_cuda_graphs: bool = False,
    ) -> None:
        self.network = network.eval()
        self.use_cuda_graphs = use_cuda_graphs
        self.prompts = prompts
        self.answer = answer
        self.max_new_tokens = max_new_tokens
        self.cache: LruCache[EncodedImage] = LruCache(cache_size)
        parameter = next(network.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self._prefix_ids = torch.tensor(prompts.prefix_ids(), device=self.device)
        self._image_pe: torch.Tensor | None = None

    # -- image ---------------------------------------------------------------------------------
    def encode_image(self, image: Image.Image, use_cache: bool = True) -> EncodedImage:
        """Encode a PIL image (converted to RGB); the LRU returns the same object for equal content."""
        image = image.convert("RGB")
        if not use_cache:
            return self._encode(image)
        return self.cache.get_or_create(image_key(image), lambda: self._encode(image))

    @torch.inference_mode()
    def _encode(self, image: Image.Image) -> EncodedImage:
        net, config = self.network, self.network.config
        tiles, grid = anyres_tiles(image, config.grid_pinpoints, config.tower.image_size, config.tower.image_mean, config.tower.image_std)
        features = net.projector(net.tower(tiles.to(self.device, self.dtype)))
        image_tokens = merge_tile_features(features, grid, image.size, net.image_newline)
        prefix = torch.cat([net.llm.embed_tokens(self._prefix_ids), image_tokens]).unsqueeze(0)
        llm = config.llm
        cache = KvCache.allocate(llm.layers, (1, llm.kv_heads, prefix.shape[1], llm.head_dim), self.device, self.dtype)
        positions = torch.arange(prefix.shape[1], device=self.device).unsqueeze(0)
        net.llm(prefix, positions, cache)
        pixels, resized = sam_input(image, config.sam.image_size)
        embedding = net.sam_encoder(pixels.to(self.device, self.dtype))
        return EncodedImage((image.height, image.width), embedding, resized, cache)

    # -- expressions ---------------------------------------------------------------------------
    def segment(self, encoded: EncodedImage, prompts: Sequence[str], force_seg: bool) -> list[np.ndarray]:
        """Bool masks (N, H, W) per prompt; N = 0 when the model answers without `[SEG]`."""
        return [result.masks for result in self.segment_details(encoded, prompts, force_seg)]

    def segment_details(self, encoded: EncodedImage, prompts: Sequence[str], force_seg: bool) -> list[Segmentation]:
        """Like `segment`, with answers, `[SEG]` hidden states and mask logits."""
        answer = self.answer if force_seg else None
        suffixes = [self.prompts.suffix_ids(prompt, answer) for prompt in prompts]
        return self.segment_suffixes(encoded, suffixes, generate=not force_seg)

    @torch.inference_mode()
    def segment_suffixes(self, encoded: EncodedImage, suffixes: Sequence[Sequence[int]], generate: bool) -> list[Segmentation]:
        """Segment token-id suffixes in one batch: teacher-forced, or greedy until `[SEG]`/stop."""
        if not suffixes:
            return []
        replayed = self._graph_prefill(encoded, suffixes[0]) if self._replays_graph(suffixes, generate) else None
        if replayed is not None:
            batch, hidden = replayed
        else:
            batch = _SuffixBatch(self, encoded, suffixes, self.max_new_tokens if generate else 0)
            hidden = batch.prefill()
        if generate:
            answers, seg_states = batch.decode_greedy(hidden[:, -1])
        else:
            answers, seg_states = batch.forced_answers(hidden)
        return self._masks(encoded, answers, seg_states)

    def _replays_graph(self, suffixes: Sequence[Sequence[int]], generate: bool) -> bool:
        """Whether this call is a teacher-forced re-prompt that a CUDA graph can replay."""
        return self.use_cuda_graphs and self.device.type == "cuda" and len(suffixes) == 1 and not generate

    def _graph_prefill(self, encoded: EncodedImage, suffix: Sequence[int]) -> tuple[_SuffixBatch, torch.Tensor] | None:
        """One suffix's batch (layout only) and its prefill, replayed from the image's graph;
        None (and graphs off from then on, with a warning) when capturing fails."""
        width = bucket_width(len(suffix))
        graph = encoded.suffix_graphs.get(width)
        if graph is None:
            try:
                graph = SuffixGraph(_SuffixBatch(self, encoded, [[0] * width], 0))
            except RuntimeError as error:
                logger.warning("CUDA graph capture failed (%s); re-prompts run without graphs", error)
                self.use_cuda_graphs = False
                return None
            encoded.suffix_graphs[width] = graph
        batch = _SuffixBatch(self, encoded, [suffix], 0, width=width, cache=graph.template.cache)
        return batch, graph.replay(batch)

    def _masks(self, encoded: EncodedImage, answers: list[list[int]], seg_states: list[torch.Tensor]) -> list[Segmentation]:
        net = self.network
        counts = [states.shape[0] for states in seg_states]
        height, width = encoded.size
        all_states = torch.cat(seg_states) if seg_states else torch.zeros(0, net.config.llm.hidden, device=self.device, dtype=self.dtype)
        if all_states.shape[0]:
            sparse = net.text2sam(all_states).unsqueeze(1)
            dense = net.prompt_encoder.no_mask_embed.weight.view(1, -1, 1, 1)
            low_res = net.mask_decoder(encoded.sam_embedding, self._dense_pe(), dense, sparse)
            logits = postprocess_masks(low_res, net.config.sam.image_size, encoded.sam_resized, encoded.size)
        else:
            logits = torch.zeros(0, height, width, device=self.device)
        results = []
        for answer, states, row_logits in zip(answers, seg_states, logits.split(counts)):
            row_logits = row_logits.float().cpu()
            results.append(
                Segmentation(answer, self.prompts.decode(answer), states.float().cpu(), row_logits, (row_logits > 0).numpy())
            )
        return results

    def _dense_pe(self) -> torch.Tensor:
        if self._image_pe is None:
            self._image_pe = self.network.prompt_encoder.pe_layer(self.network.config.sam.grid).to(self.dtype)
        return self._image_pe


class _SuffixBatch:
    """Suffixes left-padded into one block after the shared prefix; greedy steps after that.

    Cache columns: [prefix | padded suffixes | generated steps]; each row's positions count only
    its own tokens, and a boolean mask hides padding and other rows' finished steps.
    """

    def __init__(
        self,
        engine: NativeEngine,
        encoded: EncodedImage,
        suffixes: Sequence[Sequence[int]],
        max_new: int,
        width: int = 0,
        cache: KvCache | None = None,
    ) -> None:
        """`width`: pad to at least this many columns; `cache`: use this working cache (a
        CUDA graph's) instead of a fresh copy of the prefix."""
        self.engine = engine
        self.net = engine.network
        device = engine.device
        self.prefix_length = encoded.prefix_length
        self.width = width = max(width, *(len(suffix) for suffix in suffixes))
        lengths = torch.tensor([len(suffix) for suffix in suffixes])
        # Built on the host from the known ids, moved once: no device-to-host syncs before decoding.
        tokens = torch.zeros(len(suffixes), width, dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            tokens[row, width - len(suffix):] = torch.tensor(list(suffix), dtype=torch.long)
        self.host_tokens = tokens
        self.host_valid = torch.arange(width) >= (width - lengths)[:, None]
        self.tokens, self.lengths = tokens.to(device), lengths.to(device)
        self.cache = cache if cache is not None else encoded.prefix_cache.expanded(len(suffixes), width + max_new)
        self.key_valid = torch.zeros(len(suffixes), self.cache.capacity, dtype=torch.bool)
        self.key_valid[:, : self.prefix_length] = True
        self.key_valid[:, self.prefix_length : self.prefix_length + width] = self.host_valid
        self.key_valid = self.key_valid.to(device)

    def load_inputs(self, other: _SuffixBatch) -> None:
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
        return self.net.llm(self.net.llm.embed_tokens(self.tokens), positions, self.cache, mask)

    def forced_answers(self, hidden: torch.Tensor) -> tuple[list[list[int]], list[torch.Tensor]]:
        """The `[SEG]` rows of a teacher-forced suffix, in order; the answer is the suffix itself."""
        is_seg = (self.host_tokens == self.engine.prompts.seg_id) & self.host_valid
        answers = [row[valid].tolist() for row, valid in zip(self.host_tokens, self.host_valid)]
        columns = [torch.nonzero(row)[:, 0].to(hidden.device) for row in is_seg]
        return answers, [hidden[row].index_select(0, index) for row, index in enumerate(columns)]

    def decode_greedy(self, last_hidden: torch.Tensor) -> tuple[list[list[int]], list[torch.Tensor]]:
        """Greedy decoding per row until `[SEG]` (whose state is kept), a stop token or the limit."""
        engine, llm = self.engine, self.net.llm
        batch = last_hidden.shape[0]
        seg_id, stop_ids = engine.prompts.seg_id, engine.prompts.stop_ids
        empty = last_hidden.new_zeros(0, last_hidden.shape[-1])
        answers: list[list[int]] = [[] for _ in range(batch)]
        seg_states = [empty] * batch
        active = [True] * batch
        pending = llm.lm_head(last_hidden).argmax(-1)
        for step in range(engine.max_new_tokens):
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


def load_native_engine(
    model_dir: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    answer: str = DEFAULT_ANSWER,
    max_new_tokens: int = 32,
    cache_size: int = 8,
) -> NativeEngine:
    """Build the engine of a local checkpoint directory, refusing anything it cannot reproduce.

    Raises `UnsupportedCheckpointError` (config values) or `CheckpointMismatchError` (tensors).
    """
    model_dir = Path(model_dir)
    shapes = read_safetensors_shapes(model_dir)
    try:
        config = read_engine_config(model_dir, shapes)
    except KeyError as error:  # a tensor the configuration is derived from is absent
        raise CheckpointMismatchError([str(error.args[0])], [], []) from error
    network = build_network(config, device, dtype)
    load_weights(network, model_dir, shapes)
    prompts = ChatmlPrompts(load_tokenizer(model_dir), config.system_prompt)
    return NativeEngine(network, prompts, answer=answer, max_new_tokens=max_new_tokens, cache_size=cache_size)


def build_network(config: EngineConfig, device: str | torch.device, dtype: torch.dtype) -> MlcdSegNetwork:
    """The network with freshly initialised weights, created directly on `device` in `dtype`."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            network = MlcdSegNetwork(config)
    finally:
        torch.set_default_dtype(previous)
    return network.eval()
