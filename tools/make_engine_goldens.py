"""Write the native engine's golden files by running the authors' REFERENCE code on tiny weights.

Usage (not run in CI; needs its own environment, see research/running-the-reference.md):

    HF_HUB_OFFLINE=1 /work/refenv/bin/python tools/make_engine_goldens.py \
        --reference /path/to/unicom/mlcd_vl/downstream --out tests/fixtures/engine

With `--refine-only` it keeps the checkpoint and text goldens in --out and (re)writes only the
refinement goldens (`refine_goldens.npz`, `refine_manifest.json`): the reference SAM prompt
encoder and mask decoder on clicks, boxes, previous masks and `[SEG]` embeddings. That part needs
only torch, numpy, pillow and safetensors (the reference's `llava/model/sam` package is imported
alone).

The reference (an extracted checkout of GitHub deepglint/unicom) is imported at run time; nothing
of it is copied here. The tiny model: CLIP tower 128 wide, 3 layers, 70-px tiles of 14-px patches;
Qwen2 64 wide, 2 layers, 4 heads, 2 KV heads; SAM encoder 32 wide, 2 blocks (one global); SAM
prompt encoder and mask decoder at their fixed width 256. Seeded random weights are rescaled from
the model's own activations (see `calibrate_*`) so that answers, `[SEG]` states and masks depend on
the expression; weights are stored in float16 and the reference runs in float32 on those values.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

TILE, PATCH = 70, 14
GRID_PINPOINTS = [[70, 70], [70, 140], [70, 210], [70, 280], [140, 70], [140, 140], [140, 210], [210, 70], [210, 140], [280, 70]]
# (width, height): square, wide, tall, landscape, portrait, and each canvas of GRID_PINPOINTS.
IMAGE_SIZES = [(66, 60), (120, 110), (110, 120), (270, 66), (64, 272), (200, 130), (125, 200), (200, 64), (64, 190), (139, 66), (60, 125)]
EXPRESSIONS = [
    "the red ball on the left",
    "a small green square",
    "blue sky",
    "person standing near the door",
    "the second car from the right",
    "yellow flower",
    "dark shadow under the table",
    "white cup",
    "the largest object",
    "tree",
    "black cat sleeping",
    "an empty chair",
]
EXPRESSION_COUNTS = {0: 10, 1: 10, 2: 3, 3: 3}  # per image index; the others get one expression
ANSWER = "It is [SEG]."
MAX_NEW_TOKENS = 6
SYSTEM = "You are a helpful assistant."
TINY_SAM_ENCODER = (32, 2, 2, [1])  # _build_sam's encoder width, depth, heads, global-attention blocks


def shim_torchvision() -> None:
    """Stand-ins for the two torchvision functions the reference's ResizeLongestSide imports."""
    functional = types.ModuleType("torchvision.transforms.functional")
    # torchvision's resize of a PIL image is PIL's bilinear resize to (w, h).
    functional.resize = lambda image, size: image.resize((size[1], size[0]), Image.BILINEAR)
    functional.to_pil_image = lambda array: Image.fromarray(array)
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = transforms
    for module in (functional, transforms, torchvision):
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    sys.modules.update({"torchvision": torchvision, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional})


def import_reference(reference: Path):
    """Import the reference package with the shims a CPU machine without torchvision needs."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    shim_torchvision()
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # create_seg_token_mask calls .cuda()
    sys.path.insert(0, str(reference))
    import llava.model.llava_arch as llava_arch
    from llava.model.sam.build_sam import _build_sam

    llava_arch.build_sam_vit_h = lambda checkpoint=None: _build_sam(*TINY_SAM_ENCODER, checkpoint=None)
    import llava
    return llava


def import_reference_sam(reference: Path):
    """The reference's `llava/model/sam` package alone (torch only), as module `reference_sam`."""
    shim_torchvision()
    folder = reference / "llava" / "model" / "sam"
    spec = importlib.util.spec_from_file_location("reference_sam", folder / "__init__.py", submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["reference_sam"] = package
    spec.loader.exec_module(package)
    importlib.import_module("reference_sam.utils.transforms")
    return package


def make_tokenizer(directory: Path, corpus: list[str]):
    """A slow Qwen2 tokenizer: 256 byte symbols, BPE merges learnt on `corpus`, CHATML and [SEG]."""
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import bytes_to_unicode

    symbols = bytes_to_unicode()
    words = [[symbols[b] for b in w.encode()] for text in corpus for w in _pretokens(text)]
    vocab = {symbols[b]: b for b in range(256)}
    merges = []
    for _ in range(120):
        counts: dict[tuple[str, str], int] = {}
        for word in words:
            for pair in zip(word, word[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(sorted(counts), key=counts.get)
        merges.append(best)
        vocab["".join(best)] = len(vocab)
        words = [_merge(word, best) for word in words]
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = Qwen2Tokenizer(vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.add_tokens(["[SEG]"])
    tokenizer.save_pretrained(str(directory))
    return Qwen2Tokenizer.from_pretrained(str(directory))


def _pretokens(text: str) -> list[str]:
    import regex

    return regex.findall(r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""", text)


def _merge(word: list[str], pair: tuple[str, str]) -> list[str]:
    out, index = [], 0
    while index < len(word):
        if index + 1 < len(word) and (word[index], word[index + 1]) == pair:
            out.append(word[index] + word[index + 1])
            index += 2
        else:
            out.append(word[index])
            index += 1
    return out


def make_tower_dir(directory: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=2, image_size=TILE, patch_size=PATCH)
    CLIPVisionModel(config).save_pretrained(str(directory))
    CLIPImageProcessor(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}).save_pretrained(str(directory))


def make_model(llava, tower_dir: Path, vocab: int):
    from llava.model.language_model.llava_qwen import LlavaQwenConfig, LlavaQwenForCausalLM

    config = LlavaQwenConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=False, use_sliding_window=False,
        architectures=["LlavaQwenForCausalLM"], mm_vision_tower=str(tower_dir), mm_hidden_size=128,
        mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        mm_patch_merge_type="spatial_unpad", image_aspect_ratio="anyres", image_grid_pinpoints=GRID_PINPOINTS,
        mm_use_im_start_end=False, mm_use_im_patch_token=False, sam_path="sam_vit_h_4b8939.pth",
        tokenizer_padding_side="right",
    )
    config._attn_implementation = "eager"
    model = LlavaQwenForCausalLM(config).eval()
    return model


def seeded_weights(model: torch.nn.Module, seed: int) -> None:
    """Replace every tensor by seeded values of a sensible scale for its module's role."""
    generator = torch.Generator().manual_seed(seed)
    noise = lambda tensor: torch.randn(tensor.shape, generator=generator)  # noqa: E731
    with torch.no_grad():
        for module_name, module in sorted(model.named_modules()):
            kind = type(module).__name__
            buffers = [(n, b) for n, b in module.named_buffers(recurse=False) if n not in module._non_persistent_buffers_set]
            for name, tensor in sorted(list(module.named_parameters(recurse=False)) + buffers):
                if name == "bias":
                    value = 0.05 * noise(tensor)
                elif "Norm" in kind:
                    value = 1 + 0.1 * noise(tensor)
                elif kind in ("Linear", "Conv2d"):
                    value = noise(tensor) / tensor[0].numel() ** 0.5
                elif kind == "ConvTranspose2d":  # weight (in, out, k, k)
                    value = noise(tensor) / tensor.shape[0] ** 0.5
                else:  # embeddings, positions, relative tables, the newline, Fourier matrix
                    value = 0.5 * noise(tensor)
                tensor.copy_(value)


def make_images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    images = []
    for width, height in IMAGE_SIZES:
        image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            x1, y1 = x0 + int(rng.integers(5, width)), y0 + int(rng.integers(5, height))
            draw.rectangle((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        images.append(image)
    return images


def sam_pixels(sam_transform, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
    """SAM's input as the reference eval builds it → (float32 (1, 3, 1024, 1024), resized (h, w))."""
    resized = sam_transform.apply_image(np.array(image))
    pixels = torch.from_numpy(resized).permute(2, 0, 1).contiguous()
    pixels = (pixels - torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)) / torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    pixels = torch.nn.functional.pad(pixels, (0, 1024 - pixels.shape[2], 0, 1024 - pixels.shape[1]))
    return pixels.unsqueeze(0).float(), resized.shape[:2]


class Reference:
    """Runs the reference model the way its eval does, with CHATML prompts."""

    def __init__(self, llava, model, tokenizer, tower_dir: Path) -> None:
        from transformers import CLIPImageProcessor

        from llava.model.sam.utils.transforms import ResizeLongestSide

        self.model, self.tokenizer = model, tokenizer
        self.processor = CLIPImageProcessor.from_pretrained(str(tower_dir))
        self.sam_transform = ResizeLongestSide(1024)
        model.seg_token_idx = tokenizer("[SEG]", add_special_tokens=False).input_ids[0]
        self.stop_ids = {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
        self.captured: dict[str, torch.Tensor] = {}
        original = model.process_hidden_states

        def capture(hidden_states, seg_token_mask):
            last = hidden_states[-1][0]
            self.captured["seg_hidden"] = last[seg_token_mask[0][: last.shape[0]]].detach().clone()
            return original(hidden_states, seg_token_mask)

        model.process_hidden_states = capture

    def input_ids(self, question: str, answer: str | None) -> torch.Tensor:
        from llava.conversation import conv_templates
        from llava.mm_utils import tokenizer_image_token

        conversation = conv_templates["qwen_1_5"].copy()
        conversation.append_message(conversation.roles[0], "<image>\n" + question)
        conversation.append_message(conversation.roles[1], answer)
        return tokenizer_image_token(conversation.get_prompt(), self.tokenizer, return_tensors="pt").unsqueeze(0)

    def image_inputs(self, image: Image.Image) -> dict:
        from llava.mm_utils import process_images

        from llava.model.llava_arch import LlavaMetaForCausalLM  # noqa: F401 (import order)

        pixels, resized = sam_pixels(self.sam_transform, image)
        return dict(
            images=process_images([image], self.processor, self.model.config),
            image_sizes=[image.size],
            grounding_enc_imgs=[pixels],
            image_sam_resizes=[[resized]],
            original_sizes=[(image.height, image.width)],
        )

    @torch.inference_mode()
    def masks(self, ids: torch.Tensor, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(seg hidden (N, hidden), mask logits (N, H, W)) of one forward on `ids`."""
        output = self.model.forward(input_ids=ids, attention_mask=None, output_hidden_states=True, infer=True, **inputs)
        return self.captured["seg_hidden"].float(), output["pred_masks"][0].float()

    @torch.inference_mode()
    def last_hidden(self, ids: torch.Tensor, inputs: dict) -> torch.Tensor:
        """Final-norm hidden state at the last position (what the LM head reads)."""
        captured = {}
        handle = self.model.lm_head.register_forward_hook(lambda module, args, out: captured.update(h=args[0][0, -1]))
        self.model.forward(input_ids=ids, images=inputs["images"], image_sizes=inputs["image_sizes"], dpo_forward=True)
        handle.remove()
        return captured["h"].float()

    @torch.inference_mode()
    def greedy(self, question: str, inputs: dict) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Greedy answer; if it reaches [SEG], the masks of prompt + answer."""
        ids = self.input_ids(question, None)
        prompt_length = ids.shape[1]
        for _ in range(MAX_NEW_TOKENS):
            logits, _ = self.model.forward(input_ids=ids, images=inputs["images"], image_sizes=inputs["image_sizes"], dpo_forward=True)
            token = int(logits[0, -1].argmax())
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            if token == self.model.seg_token_idx:
                hidden, logits = self.masks(ids, inputs)
                return ids[0, prompt_length:].tolist(), hidden, logits
            if token in self.stop_ids:
                break
        return ids[0, prompt_length:].tolist(), torch.zeros(0, 64), torch.zeros(0, *inputs["original_sizes"][0])


def pairs() -> list[tuple[int, str]]:
    out = []
    for image_index in range(len(IMAGE_SIZES)):
        count = EXPRESSION_COUNTS.get(image_index, 1)
        out += [(image_index, EXPRESSIONS[(image_index * 5 + k) % len(EXPRESSIONS)]) for k in range(count)]
    return out


def principal_direction(states: torch.Tensor, avoid: list[torch.Tensor]) -> torch.Tensor:
    """Unit direction of largest variation of `states`, orthogonal to their mean and to `avoid`."""
    centred = states - states.mean(0)
    directions = torch.linalg.svd(centred, full_matrices=False).Vh
    for direction in directions:
        for other in [states.mean(0)] + avoid:
            other = other / other.norm()
            direction = direction - (direction @ other) * other
        if direction.norm() > 0.1:
            return direction / direction.norm()
    raise RuntimeError("no direction of variation")


def calibrate_answers(reference: Reference, inputs: list[dict]) -> None:
    """LM head: [SEG] wins the first step for ~40 % of prompts, <|im_end|> for ~20 %, the rest ramble."""
    head = reference.model.lm_head.weight
    states = torch.stack([reference.last_hidden(reference.input_ids(q, None), inputs[i]) for i, q in pairs()])
    with torch.no_grad():
        head.mul_(0.2)
        other_best = (states @ head.T).max(1).values
        chosen = []
        for token, share in ((reference.model.seg_token_idx, 0.4), (reference.tokenizer.convert_tokens_to_ids("<|im_end|>"), 0.2)):
            direction = principal_direction(states, chosen)
            chosen.append(direction)
            scores = states @ direction
            ratios = torch.where(scores > 0, other_best / scores.clamp(min=1e-6), torch.full_like(scores, float("inf")))
            head[token] = direction * ratios.sort().values[int(share * len(ratios))] * 1.01


def calibrate_masks(reference: Reference, inputs: list[dict]) -> None:
    """text2sam amplifies what differs between [SEG] states; the hypernetwork bias centres the logits."""
    forced = [(i, reference.input_ids(q, ANSWER)) for i, q in pairs()]
    seg_states = torch.cat([reference.masks(ids, inputs[i])[0] for i, ids in forced])
    first = reference.model.model.text2sam_projection[0]
    with torch.no_grad():
        mean = seg_states.mean(0)
        spread = ((seg_states - mean) @ first.weight.T).std()
        first.weight.mul_(6.0 / spread)
        first.bias.copy_(first.bias - first.weight @ mean)
        reference.model.model.text2sam_projection[2].weight.mul_(3.0)
    decoder = reference.model.model.sam.mask_decoder
    captured: dict[str, list[torch.Tensor]] = {"up": [], "hyper": []}
    hooks = [
        decoder.output_upscaling.register_forward_hook(lambda m, a, out: captured["up"].append(out.mean((2, 3)))),
        decoder.output_hypernetworks_mlps[0].register_forward_hook(lambda m, a, out: captured["hyper"].append(out)),
    ]
    for i, ids in forced:
        reference.masks(ids, inputs[i])
    for hook in hooks:
        hook.remove()
    up_mean, hyper = torch.cat(captured["up"]).mean(0), torch.cat(captured["hyper"])
    # Centre the logits (the mean offset along the mean upscaled feature), then remove most of
    # what all expressions' hypernetwork vectors share, so that masks follow the expression.
    centring = ((hyper @ up_mean).mean() / (up_mean @ up_mean)) * up_mean
    last = decoder.output_hypernetworks_mlps[0].layers[-1]
    with torch.no_grad():
        last.bias.copy_(last.bias - centring - 0.7 * (hyper.mean(0) - centring))


def round_to_half(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = {name: tensor.detach().half().contiguous() for name, tensor in model.state_dict().items()}
    model.load_state_dict({name: tensor.float() for name, tensor in state.items()}, strict=True)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="extracted mlcd_vl/downstream folder")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/engine"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refine-only", action="store_true",
                        help="only (re)write the refinement goldens, from the checkpoint, images and goldens already in --out")
    args = parser.parse_args()
    if args.refine_only:
        write_refine_goldens(*load_reference_sam(args.reference.resolve(), args.out / "checkpoint"), args.out)
        return
    torch.manual_seed(args.seed)
    llava = import_reference(args.reference.resolve())
    from safetensors.torch import save_file

    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    checkpoint = out / "checkpoint"
    checkpoint.mkdir(parents=True)
    (out / "images").mkdir()
    with tempfile.TemporaryDirectory() as scratch:
        tower_dir = Path(scratch) / "mlcd-tiny-clip-tower"
        make_tower_dir(tower_dir)
        tokenizer = make_tokenizer(checkpoint, [SYSTEM, ANSWER, "user assistant system"] + EXPRESSIONS)
        model = make_model(llava, tower_dir, len(tokenizer))
        seeded_weights(model, args.seed)
        reference = Reference(llava, model, tokenizer, tower_dir)
        images = make_images()
        inputs = [reference.image_inputs(image) for image in images]
        calibrate_answers(reference, inputs)
        calibrate_masks(reference, inputs)
        save_file(round_to_half(model), str(checkpoint / "model.safetensors"))
        config = model.config.to_dict()
        config["mm_vision_tower"] = tower_dir.name  # the tower's weights are in the checkpoint
        config.pop("_attn_implementation_autoset", None)
        (checkpoint / "config.json").write_text(json.dumps(config, indent=2))
        shutil.copy(tower_dir / "preprocessor_config.json", checkpoint / "preprocessor_config.json")
        write_goldens(reference, images, inputs, out)
        write_refine_goldens(model.model.sam, model.model.text2sam_projection, reference.sam_transform, out)


def write_goldens(reference: Reference, images: list[Image.Image], inputs: list[dict], out: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    records = []
    for index, image in enumerate(images):
        image.save(out / "images" / f"image{index}.png")
    for number, (image_index, question) in enumerate(pairs()):
        forced_hidden, forced_logits = reference.masks(reference.input_ids(question, ANSWER), inputs[image_index])
        answer_ids, greedy_hidden, greedy_logits = reference.greedy(question, inputs[image_index])
        for mode, hidden, logits in (("forced", forced_hidden, forced_logits), ("greedy", greedy_hidden, greedy_logits)):
            arrays[f"{number}_{mode}_hidden"] = hidden.numpy().astype(np.float32)
            arrays[f"{number}_{mode}_logits"] = logits.numpy().astype(np.float32)
        records.append({"pair": number, "image": f"image{image_index}.png", "expression": question,
                        "greedy_answer_ids": answer_ids, "greedy_answer": reference.tokenizer.decode(answer_ids),
                        "greedy_masks": int(greedy_hidden.shape[0])})
    np.savez_compressed(out / "goldens.npz", **arrays)
    manifest = {"answer": ANSWER, "max_new_tokens": MAX_NEW_TOKENS, "pairs": records,
                "image_sizes": [list(size) for size in IMAGE_SIZES]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    summarise(records, arrays)


def summarise(records: list[dict], arrays: dict[str, np.ndarray]) -> None:
    """Print what makes the goldens meaningful: mask coverage, expression dependence, answers."""
    coverage = [float((arrays[f"{r['pair']}_forced_logits"] > 0).mean()) for r in records]
    print("forced mask coverage min/median/max: %.3f %.3f %.3f" % (min(coverage), float(np.median(coverage)), max(coverage)))
    by_image: dict[str, list[np.ndarray]] = {}
    for r in records:
        by_image.setdefault(r["image"], []).append(arrays[f"{r['pair']}_forced_logits"][0] > 0)
    ious = [float((a & b).sum() / max((a | b).sum(), 1)) for masks in by_image.values() for k, a in enumerate(masks) for b in masks[k + 1:]]
    print("IoU between expressions on one image: mean %.3f max %.3f (%d pairs)" % (np.mean(ious), max(ious), len(ious)))
    print("greedy answers:", sorted({r["greedy_answer"] for r in records}))
    print("greedy with [SEG]: %d of %d" % (sum(r["greedy_masks"] for r in records), len(records)))


# Refinement goldens: the reference prompt encoder and mask decoder on clicks, boxes, previous
# masks and [SEG] embeddings. Image 1 is near square (120 x 110), 3 landscape (270 x 66), 4
# portrait (64 x 272). "text" takes the first expression of the image (its forced [SEG] state
# through text2sam); "mask_from" feeds an earlier case's low-resolution logits back as `masks`.
REFINE_CASES = [
    {"name": "one_click", "image": 1, "points": [[60, 50]], "labels": [1]},
    {"name": "clicks", "image": 1, "points": [[60, 50], [20, 95]], "labels": [1, 0]},
    {"name": "box", "image": 1, "box": [15, 20, 95, 80]},
    {"name": "box_clicks", "image": 1, "box": [15, 20, 95, 80], "points": [[50, 40], [85, 75]], "labels": [1, 0]},
    {"name": "second_round", "image": 1, "points": [[60, 50], [20, 95], [100, 15]], "labels": [1, 0, 1], "mask_from": "clicks"},
    {"name": "text", "image": 1, "text": True},
    {"name": "text_clicks", "image": 1, "text": True, "points": [[30, 30], [90, 60]], "labels": [1, 0], "mask_from": "text"},
    {"name": "text_box", "image": 1, "text": True, "box": [10, 5, 70, 100], "mask_from": "text"},
    {"name": "landscape_clicks", "image": 3, "points": [[200, 40], [30, 10]], "labels": [1, 0]},
    {"name": "landscape_one_click", "image": 3, "points": [[135.5, 20.25]], "labels": [1]},
    {"name": "portrait_clicks", "image": 4, "points": [[40, 220], [10, 30]], "labels": [1, 0]},
    {"name": "portrait_box", "image": 4, "box": [5, 100, 60, 260]},
]


def load_reference_sam(reference: Path, checkpoint: Path):
    """The reference SAM and text2sam projection, filled from the tiny checkpoint already written."""
    from safetensors.torch import load_file

    package = import_reference_sam(reference)
    from reference_sam.build_sam import _build_sam

    sam = _build_sam(*TINY_SAM_ENCODER, checkpoint=None)
    hidden = json.loads((checkpoint / "config.json").read_text())["hidden_size"]
    text2sam = package.text2sam_projection_layer(types.SimpleNamespace(hidden_size=hidden))
    state = {name: tensor.float() for name, tensor in load_file(str(checkpoint / "model.safetensors")).items()}
    for module, prefix in ((sam, "model.sam."), (text2sam, "model.text2sam_projection.")):
        module.load_state_dict({name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}, strict=True)
    transform = sys.modules["reference_sam.utils.transforms"].ResizeLongestSide(1024)
    return sam.eval(), text2sam.eval(), transform


@torch.inference_mode()
def run_reference_refine(sam, transform, embedding: torch.Tensor, original_size: tuple[int, int], resized: tuple[int, int], case: dict,
                         text_embedding: torch.Tensor | None, mask_input: torch.Tensor | None) -> dict[str, np.ndarray]:
    """One case as SamPredictor.predict_torch does it, with the reference prompt encoder's text_embeds."""
    points = boxes = None
    if "points" in case:
        coords = transform.apply_coords(np.array(case["points"], dtype=np.float64), original_size)
        points = (torch.as_tensor(coords, dtype=torch.float)[None], torch.as_tensor(case["labels"], dtype=torch.int)[None])
    if "box" in case:
        boxes = torch.as_tensor(transform.apply_boxes(np.array(case["box"], dtype=np.float64)[None], original_size), dtype=torch.float)
    multimask = points is not None and len(case["points"]) == 1 and boxes is None and text_embedding is None and mask_input is None
    sparse, dense = sam.prompt_encoder(
        points=points, boxes=boxes, masks=None if mask_input is None else mask_input[None],
        text_embeds=None if text_embedding is None else text_embedding.view(1, 1, -1),
    )
    low_res, iou = sam.mask_decoder(image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask)
    best = int(iou[0].argmax())  # SamPredictor's examples keep the highest predicted IoU
    low_res, iou = low_res[:, best], iou[:, best]
    logits = sam.postprocess_masks(low_res[:, None], input_size=resized, original_size=original_size)[:, 0]
    return {"logits": logits.numpy(), "low_res": low_res.numpy(), "iou": iou.numpy(), "kept": best, "multimask": multimask}


def write_refine_goldens(sam, text2sam, transform, out: Path) -> None:
    """refine_goldens.npz + refine_manifest.json from the images and text goldens in `out`."""
    manifest = json.loads((out / "manifest.json").read_text())
    first_pairs = {record["image"]: record["pair"] for record in reversed(manifest["pairs"])}
    with np.load(out / "goldens.npz") as goldens:
        hidden_states = {image: goldens[f"{pair}_forced_hidden"] for image, pair in first_pairs.items()}
    embeddings: dict[int, tuple] = {}
    fed_back = {case["mask_from"] for case in REFINE_CASES if "mask_from" in case}
    outputs: dict[str, dict] = {}
    arrays: dict[str, np.ndarray] = {}
    records = []
    for case in REFINE_CASES:
        image_name = f"image{case['image']}.png"
        if case["image"] not in embeddings:
            image = Image.open(out / "images" / image_name).convert("RGB")
            pixels, resized = sam_pixels(transform, image)
            with torch.inference_mode():
                embeddings[case["image"]] = (sam.image_encoder(pixels), (image.height, image.width), resized)
        embedding, original_size, resized = embeddings[case["image"]]
        text_embedding = None
        if case.get("text"):
            with torch.inference_mode():
                text_embedding = text2sam(torch.from_numpy(hidden_states[image_name][:1]))[0]
            arrays[f"{case['name']}_text_embedding"] = text_embedding.numpy()
        mask_input = torch.from_numpy(outputs[case["mask_from"]]["low_res"]) if "mask_from" in case else None
        output = run_reference_refine(sam, transform, embedding, original_size, resized, case, text_embedding, mask_input)
        outputs[case["name"]] = output
        arrays[f"{case['name']}_logits"] = output["logits"].astype(np.float32)
        arrays[f"{case['name']}_iou"] = output["iou"].astype(np.float32)
        if case["name"] in fed_back:
            arrays[f"{case['name']}_low_res"] = output["low_res"].astype(np.float32)
        records.append({**case, "text_pair": first_pairs[image_name] if case.get("text") else None,
                        "multimask": output["multimask"], "kept_mask": output["kept"]})
    np.savez_compressed(out / "refine_goldens.npz", **arrays)
    (out / "refine_manifest.json").write_text(json.dumps({"cases": records}, indent=1))
    summarise_refine(records, arrays)


def summarise_refine(records: list[dict], arrays: dict[str, np.ndarray]) -> None:
    """Print what makes the refinement goldens meaningful: coverage, and that each prompt changes the mask."""
    for record in records:
        mask = arrays[f"{record['name']}_logits"] > 0
        line = f"{record['name']}: coverage {mask.mean():.3f}, iou {float(arrays[record['name'] + '_iou'][0]):+.3f}"
        if record.get("mask_from"):
            previous = arrays[f"{record['mask_from']}_logits"] > 0
            line += f", IoU with {record['mask_from']} {(mask & previous).sum() / max((mask | previous).sum(), 1):.3f}"
        print(line)


if __name__ == "__main__":
    main()
