"""The native engine: encode an image once, then segment many expressions against it.

`encode_image` pays for the vision tower, the SAM image encoder and the LLM prefill of the
prompt prefix (system turn, user opening, image tokens); `segment` runs one batched prefill of
the expressions' suffixes on that key/value cache, then SAM's prompt encoder and mask decoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from mlcdseg.errors import CheckpointMismatchError

from .checkpoint import load_weights
from .config import EngineConfig, read_engine_config, read_safetensors_shapes
from .image_cache import LruCache, image_key
from .llm import KvCache
from .network import MlcdSegNetwork
from .preprocessing import anyres_tiles, postprocess_masks, sam_input
from .projector import merge_tile_features
from .suffix_batch import SuffixBatch
from .suffix_graph import SuffixGraphs
from .prompting import DEFAULT_ANSWER, ChatmlPrompts, PromptCodec, load_tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """The expensive per-image state, never changed after encoding. Tensors live on the engine's device.

    size: (height, width) of the original image; sam_embedding: (1, C, g, g);
    sam_resized: (height, width) of the image inside SAM's padded square;
    prefix_cache: 1-row key/value cache of the prompt up to and including the image tokens.
    Compared by identity (its tensors have no single truth value).
    """

    size: tuple[int, int]
    sam_embedding: torch.Tensor
    sam_resized: tuple[int, int]
    prefix_cache: KvCache

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

    use_cuda_graphs: replay a teacher-forced re-prompt (one expression) on an encoded image from
    a CUDA graph (`suffix_graphs`, mlcdseg.engine.suffix_graph) instead of launching every
    kernel; off a GPU the same replay runs eagerly. Off by default: it has not yet been run on
    a GPU (bench/engine_gpu.py measures and checks it). A failed capture turns `suffix_graphs`
    off, not this setting.
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
        self.suffix_graphs = SuffixGraphs()
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
        """Bool masks (N, H, W) per prompt; N = 0 when the model answers without `[SEG]`.

        A prompt's result depends on the others in the call only through float rounding (padding
        to the longest suffix, SAM's decoder run as one batch): logits move by ~1e-5 against a
        call of its own, so a pixel can flip where its logit is that close to 0
        (tests/test_engine_batch_agreement.py holds the bound).
        """
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
        prompts, llm = self.prompts, self.network.llm
        replayed = None
        if self.use_cuda_graphs and len(suffixes) == 1 and not generate:
            replayed = self.suffix_graphs.prefill(llm, encoded.prefix_cache, suffixes[0])
        if replayed is not None:
            batch, hidden = replayed
        else:
            batch = SuffixBatch(llm, encoded.prefix_cache, suffixes, self.max_new_tokens if generate else 0)
            hidden = batch.prefill()
        if generate:
            answers, seg_states = batch.decode_greedy(hidden[:, -1], prompts.seg_id, prompts.stop_ids)
        else:
            answers, seg_states = batch.forced_answers(hidden, prompts.seg_id)
        return self._masks(encoded, answers, seg_states)

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
