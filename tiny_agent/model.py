"""A small mixture-of-experts vision-language model in plain PyTorch.

Why not a small transformers Qwen3-VL-MoE: five from-scratch runs of that architecture on this
task learned nothing from images (a ViT tower whose tokens drift to an image-independent
offset, and a language model that never learns to route to them; docs/tiny_model.md, "What a
small Qwen3-VL-MoE did on this task"), while a convolutional encoder with batch norm learned
to read tight crops within a few hundred steps.
So the tower here is convolutional; the decoder keeps the parts that make the reference model a
mixture of experts (top-k routed SwiGLU experts with a load-balancing loss), and images enter
the token sequence the way Qwen-VL's do (one placeholder expands to a grid of visual tokens).

- Vision: four stride-2 conv blocks (GroupNorm + GELU) over a 128×128 image with two
  coordinate channels (CoordConv, so a token can say *where* in its cell a marker sits), giving
  an 8×8 grid of tokens, projected to the decoder width with a learned position per cell. The
  norm is per image: batch norm's running statistics, averaged over global views and crops (two
  different image populations), made the served model see features it never trained on.
- Decoder: pre-norm transformer, learned positions, causal attention with a KV cache for
  generation; feed-forward layers are top-2-of-4 routed experts except the first (dense).
- Tags: heads on the visual grid name, per cell, the colour and shape of a marker centred
  there, its offset, and the character it holds (none where it is too small to read). Each
  visual token gets the embeddings of the words its heads name, weighted by their
  probabilities (OSCAR/VinVL feed detector tags to the language model the same way), so that
  finding "the red circle" in the image is the same copy as finding a word in the text:
  the routing a decoder was seen never to learn from raw visual tokens. The heads are
  supervised in training, which also keeps the tower learning from step one.
- Position code: each cell also carries where the marker centred there sits, as sines and
  cosines of its absolute position at one and ten cycles per image side. On those circles the
  tenths and hundredths of a coordinate are arcs, so the decoder reads the two digits it writes
  for a crop box with a linear map instead of computing them from a cell index.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

POSITION_CYCLES = (1, 10)


class DecoderOutput(NamedTuple):
    logits: torch.Tensor
    balance: torch.Tensor  # the MoE layers' load-balancing loss
    caches: list[tuple[torch.Tensor, torch.Tensor]]
    pointer_logp: torch.Tensor | None  # see TinyVLM.forward
    copy_logits: torch.Tensor | None


@dataclass(frozen=True)
class TinyVLMConfig:
    vocab_size: int
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 6
    n_experts: int = 4
    top_k: int = 2
    d_expert: int = 384
    dense_layers: tuple[int, ...] = (0,)
    max_positions: int = 768
    image_side: int = 128
    grid: int = 8
    vision_channels: tuple[int, ...] = (32, 64, 128, 192)
    image_token_id: int = 0
    aux_colours: int = 7
    aux_shapes: int = 4
    aux_chars: int = 11
    tag_words: dict = field(default_factory=dict)  # "colour"/"shape"/"char" -> token ids

    @property
    def image_tokens(self) -> int:
        return self.grid * self.grid

    def to_dict(self) -> dict:
        data = asdict(self)
        data["dense_layers"] = list(self.dense_layers)
        data["vision_channels"] = list(self.vision_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TinyVLMConfig:
        data = dict(data)
        data["dense_layers"] = tuple(data["dense_layers"])
        data["vision_channels"] = tuple(data["vision_channels"])
        return cls(**data)


def _coords(batch: int, side: int, device: torch.device) -> torch.Tensor:
    axis = torch.linspace(-1.0, 1.0, side, device=device)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs, ys]).expand(batch, 2, side, side)


class VisionTower(nn.Module):
    """Conv encoder: (B, 3, 128, 128) in [0, 1] -> (B, grid², channels)."""

    MEAN = (0.9, 0.9, 0.9)
    STD = (0.2, 0.2, 0.2)

    def __init__(self, config: TinyVLMConfig):
        super().__init__()
        blocks = []
        in_ch = 3 + 2
        for index, ch in enumerate(config.vision_channels):
            extra = 2 if index == 2 else 0  # coordinates again at stride 4, where cells form
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(in_ch + extra, ch, 3, stride=2, padding=1, bias=False),
                    nn.GroupNorm(8, ch),
                    nn.GELU(),
                    nn.Conv2d(ch, ch, 3, padding=1, bias=False),
                    nn.GroupNorm(8, ch),
                    nn.GELU(),
                )
            )
            in_ch = ch
        self.blocks = nn.ModuleList(blocks)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - self.mean) / self.std
        x = torch.cat([x, _coords(x.shape[0], x.shape[-1], x.device)], dim=1)
        for index, block in enumerate(self.blocks):
            if index == 2:
                x = torch.cat([x, _coords(x.shape[0], x.shape[-1], x.device)], dim=1)
            x = block(x)
        return x.flatten(2).transpose(1, 2)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class MoE(nn.Module):
    """Top-k routed SwiGLU experts; returns the output and a Switch-style balancing loss."""

    def __init__(self, dim: int, hidden: int, n_experts: int, top_k: int):
        super().__init__()
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(dim, hidden) for _ in range(n_experts))
        self.top_k = top_k

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = self.router(flat).softmax(dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(flat)
        for index, expert in enumerate(self.experts):
            rows, slot = (chosen == index).nonzero(as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(flat[rows]) * weights[rows, slot, None])
        load = F.one_hot(chosen, probs.shape[-1]).float().sum(1).mean(0) / self.top_k
        balance = probs.shape[-1] * (load * probs.mean(0)).sum()
        return out.reshape(shape), balance


class Block(nn.Module):
    def __init__(self, config: TinyVLMConfig, dense: bool):
        super().__init__()
        self.n_heads = config.n_heads
        self.attn_norm = RMSNorm(config.d_model)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)
        self.ffn_norm = RMSNorm(config.d_model)
        self.ffn: nn.Module = (
            SwiGLU(config.d_model, 2 * config.d_expert)
            if dense
            else MoE(config.d_model, config.d_expert, config.n_experts, config.top_k)
        )

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
        pointer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor], tuple | None]:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).split(dim, dim=-1)
        q, k, v = (t.view(batch, length, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        watched = None
        if pointer is not None:
            # For each (row, query, key, head): the head's log-attention from the query to the
            # key it should copy from, and what that head alone adds to the residual stream
            # there (the pointer and copy losses of training).
            rows, queries, keys, heads = pointer.unbind(-1)
            scores = torch.einsum("nd,nkd->nk", q[rows, heads, queries], k[rows, heads])
            scores = scores / math.sqrt(q.shape[-1])
            scores = scores.masked_fill(~mask[rows, 0, queries], float("-inf"))
            per_head = self.out.weight.view(dim, self.n_heads, -1)[:, heads]  # (dim, N, hd)
            watched = (
                scores.log_softmax(-1).gather(1, keys[:, None]).squeeze(1),
                torch.einsum("nh,dnh->nd", attended[rows, heads, queries], per_head),
            )
        x = x + self.out(attended.transpose(1, 2).reshape(batch, length, dim))
        hidden = self.ffn_norm(x)
        if isinstance(self.ffn, MoE):
            ffn_out, balance = self.ffn(hidden)
        else:
            ffn_out, balance = self.ffn(hidden), x.new_zeros(())
        return x + ffn_out, balance, (k, v), watched


class TinyVLM(nn.Module):
    def __init__(self, config: TinyVLMConfig):
        super().__init__()
        self.config = config
        vision_out = config.vision_channels[-1]
        self.vision = VisionTower(config)
        self.projector = nn.Sequential(
            nn.Linear(vision_out, config.d_model),
            nn.GELU(),
            nn.Linear(config.d_model, config.d_model),
            RMSNorm(config.d_model),
        )
        self.location = nn.Embedding(4 * 10, config.d_model)  # digit places of x.xx, y.yy
        self.position_code = nn.Linear(2 * len(POSITION_CYCLES) * 2, config.d_model, bias=False)
        self.cell_position = nn.Parameter(torch.zeros(config.image_tokens, config.d_model))
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.position = nn.Embedding(config.max_positions, config.d_model)
        self.blocks = nn.ModuleList(
            Block(config, dense=index in config.dense_layers) for index in range(config.n_layers)
        )
        self.norm = RMSNorm(config.d_model)
        self.aux_global = nn.Linear(vision_out, config.aux_colours + config.aux_shapes + 2)
        self.aux_crop = nn.Linear(vision_out, config.aux_chars)
        self.apply(self._init)
        with torch.no_grad():
            # Visual features enter at the scale of word embeddings, so that the tag words the
            # heads add are not drowned by them (a token is RMS-normalised inside every block).
            self.projector[-1].weight.fill_(0.02)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Visual tokens in decoder width for a batch of images."""
        return self.encode_features(self.vision(pixels))

    def encode_features(self, features: torch.Tensor) -> torch.Tensor:
        """Visual tokens from the tower's grid features (cached while the tower is frozen)."""
        tokens = self.projector(features) + self.cell_position
        if self.config.tag_words:
            tokens = (
                tokens
                + self.tag_embeddings(features)
                + self.position_embeddings(features)
                + self.location_embeddings(features)
            )
        return tokens

    def marker_positions(self, features: torch.Tensor) -> torch.Tensor:
        """(B, cells, 2): the absolute x, y in [0, 1] of a marker centred in each cell."""
        grid = self.config.grid
        offsets = self.aux_global(features)[..., -2:].sigmoid()
        cells = torch.arange(grid * grid, device=features.device)
        corner = torch.stack([cells % grid, cells // grid], dim=-1).to(offsets.dtype)
        return (corner + offsets) / grid

    def position_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """The position code of each cell's marker, weighted by the chance a marker is there."""
        angles = torch.cat(
            [2 * math.pi * cycles * self.marker_positions(features) for cycles in POSITION_CYCLES],
            dim=-1,
        )
        code = self.position_code(torch.cat([angles.cos(), angles.sin()], dim=-1))
        return self.presence(features) * code

    def location_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """Location tokens (as in Pix2Seq and Kosmos-2): the two-decimal x and y of each
        cell's marker, one learned embedding per digit place, weighted by its presence.

        The decoder copies a crop centre digit by digit from the marker's cell the way it
        copies a colour: each place has its own embedding, so each digit is one word to find.
        """
        hundredths = (self.marker_positions(features) * 100).round().clamp(0, 99).long()
        digits = torch.stack(
            [
                hundredths[..., 0] // 10,
                hundredths[..., 0] % 10,
                hundredths[..., 1] // 10,
                hundredths[..., 1] % 10,
            ],
            dim=-1,
        )
        places = torch.arange(4, device=features.device) * 10
        return self.presence(features) * self.location(digits + places).sum(-2)

    def presence(self, features: torch.Tensor) -> torch.Tensor:
        """(B, cells, 1): the chance that a marker is centred in each cell."""
        colours = self.aux_global(features)[..., : self.config.aux_colours]
        return 1 - colours.softmax(-1)[..., :1]

    def tag_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """Probability-weighted embeddings of the words the tag heads name for each cell."""
        config = self.config
        grid = self.aux_global(features)
        colours = grid[..., : config.aux_colours]
        shapes = grid[..., config.aux_colours : config.aux_colours + config.aux_shapes]
        chars = self.aux_crop(features)
        total = torch.zeros_like(features[..., :1]).expand(*features.shape[:2], config.d_model)
        for logits, key in ((colours, "colour"), (shapes, "shape"), (chars, "char")):
            words = self.embed.weight[torch.tensor(config.tag_words[key], device=features.device)]
            # Index 0 of every head is "nothing there", which names no word.
            total = total + logits.softmax(-1)[..., 1:] @ words
        return total

    def embed_inputs(self, ids: torch.Tensor, visual: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with each run of image placeholders replaced by one image's grid."""
        x = self.embed(ids)
        if visual is not None and visual.shape[0]:
            slots = ids == self.config.image_token_id
            x = x.masked_scatter(
                slots.unsqueeze(-1), visual.reshape(-1, visual.shape[-1]).to(x.dtype)
            )
        return x

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        caches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        pointer: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """Run the decoder on embedded inputs.

        `pointer` (N, 5) lists (row, query, key, head, layer) for the pointer loss in training:
        the key a query should copy from through that head of that layer. Each one's
        log-attention is returned, with the vocabulary logits of what the head alone adds.
        """
        x = x + self.position(positions)
        balance = x.new_zeros(())
        new_caches = []
        pointer_logp = copy_logits = None
        if pointer is not None:
            pointer_logp = x.new_zeros(len(pointer))
            copy_logits = x.new_zeros(len(pointer), self.config.vocab_size)
        for index, block in enumerate(self.blocks):
            chosen = None if pointer is None else pointer[:, 4] == index
            watch = pointer[chosen, :4] if chosen is not None and chosen.any() else None
            x, block_balance, cache, watched = block(
                x, mask, None if caches is None else caches[index], watch
            )
            if watched is not None:
                pointer_logp[chosen] = watched[0]
                copy_logits[chosen] = self.norm(watched[1]) @ self.embed.weight.T
            balance = balance + block_balance
            new_caches.append(cache)
        logits = self.norm(x) @ self.embed.weight.T
        return DecoderOutput(logits, balance, new_caches, pointer_logp, copy_logits)


def attention_mask(valid: torch.Tensor, query_length: int) -> torch.Tensor:
    """Boolean mask (B, 1, q, k): causal over the last `query_length` keys and no padding keys.

    `valid` is (B, k) with True for real tokens; queries are the last `query_length` positions.
    """
    key_length = valid.shape[1]
    offset = key_length - query_length
    causal = torch.ones(query_length, key_length, dtype=torch.bool, device=valid.device).tril(
        offset
    )
    mask = causal.unsqueeze(0) & valid[:, None, :]
    # A padded query row would attend to nothing (NaN softmax); let it see itself.
    keys = torch.arange(key_length, device=valid.device)
    queries = torch.arange(query_length, device=valid.device) + offset
    itself = keys[None, :] == queries[:, None]
    return (mask | itself).unsqueeze(1)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cosine_lr(step: int, total: int, warmup: int, peak: float, floor: float = 0.05) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
