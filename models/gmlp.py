"""gMLP (Liu et al. 2021, "Pay Attention to MLPs") for small images.

Patches are embedded by a strided conv into a sequence of tokens; each gMLP block is a
channel MLP whose hidden units are gated by a Spatial Gating Unit (SGU), the only place
where tokens exchange information: a learned seq_len x seq_len linear map, no attention.
"""
from __future__ import annotations

from collections.abc import Sequence

import paddle
import paddle.nn as nn

from models.registry import register_model


class DropPath(nn.Layer):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``.

    Kept samples are scaled by 1 / (1 - p) so the expected output is unchanged at eval.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """``x`` in eval or at p = 0; else ``x`` with whole samples zeroed, the others scaled by 1 / (1 - p)."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = paddle.bernoulli(paddle.full([x.shape[0]] + [1] * (x.ndim - 1), keep, dtype=x.dtype))
        return x * mask / keep

    def extra_repr(self) -> str:
        """Shown in ``print(model)``."""
        return f"p={self.p}"


class SpatialGatingUnit(nn.Layer):
    """Split channels into (u, v), mix v across tokens, gate: u * (W @ LayerNorm(v) + b).

    The token-mixing map is the parameter ``spatial_weight`` of shape [seq_len, seq_len]:
    row i, column j says how much input token j feeds output token i (tokens in row-major
    patch order), so it can be drawn as a heatmap directly, or row i reshaped to the patch
    grid. ``spatial_bias`` has shape [seq_len, 1] (one per output token).

    ``init_weights`` draws the weights from uniform(-1e-3, 1e-3) and sets the bias to 1, the
    paper's near-zero init: W @ v + b ~= 1, so the unit starts as u * 1 and each block as a
    plain FFN on u; token mixing is learned from there. ``apply_init`` runs it after any
    scheme, and the constructor runs it too.

    Args:
        dim: channels in (split into two halves of dim // 2).
        seq_len: number of tokens.
        norm_layer: normalization class for v, taking the channel count.
    """

    def __init__(self, dim: int, seq_len: int, norm_layer: type[nn.Layer] = nn.LayerNorm) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"SpatialGatingUnit needs an even channel count, got {dim}")
        self.seq_len = seq_len
        self.norm = norm_layer(dim // 2)
        self.spatial_weight = self.create_parameter([seq_len, seq_len])
        self.spatial_bias = self.create_parameter([seq_len, 1])
        self.init_weights()

    def init_weights(self, eps: float = 1e-3) -> None:
        """Near-zero token-mixing weights (uniform +-eps) and unit bias: the block starts as an FFN."""
        nn.initializer.Uniform(-eps, eps)(self.spatial_weight)
        nn.initializer.Constant(1.0)(self.spatial_bias)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Tokens [N, L, dim] -> gated tokens [N, L, dim / 2]."""
        u, v = paddle.chunk(x, 2, axis=-1)
        # [L, L] @ [N, L, C/2] broadcasts over N: mixes tokens with no transposes.
        v = paddle.matmul(self.spatial_weight, self.norm(v)) + self.spatial_bias
        return u * v

    def count_macs(self, inputs: Sequence[paddle.Tensor], output: paddle.Tensor) -> int:
        """Multiply-adds of the token mixing (N * C/2 * L * L), for ``models.summary``."""
        n, seq_len, half = output.shape
        return int(n) * int(half) * int(seq_len) * int(seq_len)

    def extra_repr(self) -> str:
        """Shown in ``print(model)``."""
        return f"seq_len={self.seq_len}"


class GMLPBlock(nn.Layer):
    """x + DropPath(Linear(SGU(GELU(Linear(LayerNorm(x)))))), channels dim -> ffn_dim -> ffn_dim/2 -> dim.

    Args:
        dim: token channels.
        ffn_dim: hidden channels (even); the SGU halves them.
        seq_len: number of tokens.
        drop_path: stochastic-depth probability of this block.
        act_layer: activation class.
        norm_layer: normalization class taking the channel count.
    """

    def __init__(self, dim: int, ffn_dim: int, seq_len: int, drop_path: float = 0.0, act_layer: type[nn.Layer] = nn.GELU,
                 norm_layer: type[nn.Layer] = nn.LayerNorm) -> None:
        super().__init__()
        self.norm = norm_layer(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.act = act_layer()
        self.sgu = SpatialGatingUnit(ffn_dim, seq_len, norm_layer)
        self.fc2 = nn.Linear(ffn_dim // 2, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Tokens [N, L, dim] -> tokens [N, L, dim] (residual)."""
        return x + self.drop_path(self.fc2(self.sgu(self.act(self.fc1(self.norm(x))))))


class PatchEmbed(nn.Layer):
    """Non-overlapping patch_size x patch_size patches -> tokens [N, (side / patch)^2, dim] via a strided conv.

    Args:
        image_size: input side; must be divisible by ``patch_size``.
        patch_size: side of the square patches.
        in_channels: image channels.
        dim: token channels.
    """

    def __init__(self, image_size: int, patch_size: int, in_channels: int, dim: int) -> None:
        super().__init__()
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}; "
                             f"pick a patch_size that divides it (e.g. 4 for 32 or 8, 2 for 8)")
        self.grid = image_size // patch_size
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2D(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Images [N, C, H, W] -> tokens [N, (H / patch_size) ** 2, dim]."""
        # [N, dim, g, g] -> [N, g*g, dim], tokens in row-major order of the patch grid.
        return self.proj(x).flatten(2).transpose([0, 2, 1])


class GMLP(nn.Layer):
    """Patch embedding, ``depth`` gMLP blocks, LayerNorm, mean over tokens, linear head.

    Args:
        num_classes: outputs.
        in_channels: image channels.
        image_size: input side; must be divisible by ``patch_size``.
        patch_size: side of the square patches; seq_len = (image_size / patch_size) ** 2.
        dim: token channels.
        depth: number of blocks.
        ffn_ratio: hidden channels per token channel (ffn_dim = ffn_ratio * dim, must be even).
        drop_path: stochastic depth of the last block; earlier blocks get linearly less.
        act_layer: activation class.
        norm_layer: normalization class taking the channel count.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, patch_size: int = 4,
                 dim: int = 128, depth: int = 4, ffn_ratio: float = 4, drop_path: float = 0.0,
                 act_layer: type[nn.Layer] = nn.GELU, norm_layer: type[nn.Layer] = nn.LayerNorm) -> None:
        super().__init__()
        ffn_dim = int(ffn_ratio * dim)
        if dim < 1 or depth < 1 or ffn_dim != ffn_ratio * dim or ffn_dim < 2 or ffn_dim % 2:
            raise ValueError(f"need dim >= 1, depth >= 1 and ffn_ratio * dim an even integer >= 2 (the SGU halves "
                             f"it); got dim={dim}, depth={depth}, ffn_ratio * dim={ffn_ratio * dim}")
        self.patch_embed = PatchEmbed(image_size, patch_size, in_channels, dim)
        seq_len = self.patch_embed.num_patches
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[GMLPBlock(dim, ffn_dim, seq_len, rates[i], act_layer, norm_layer)
                                      for i in range(depth)])
        self.norm = norm_layer(dim)
        self.head = nn.Linear(dim, num_classes)
        self.num_features = dim

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> token-averaged features [N, dim]."""
        return self.norm(self.blocks(self.patch_embed(x))).mean(axis=1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> logits [N, num_classes]."""
        return self.head(self.forward_features(x))


@register_model
def gmlp_tiny(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, patch_size: int = 4,
              dim: int = 128, depth: int = 4, ffn_ratio: float = 4, drop_path: float = 0.05) -> GMLP:
    """gMLP-tiny: 4 x 4 patches (64 tokens at 32 x 32), dim 128, 4 blocks, ffn 512.

    About 0.42M parameters and 30M multiply-adds at 32 x 32 x 3, 10 classes; 100-150 img/s
    forward+backward on 2 CPU threads (batch 128).
    """
    return GMLP(num_classes, in_channels, image_size, patch_size, dim, depth, ffn_ratio, drop_path)


@register_model
def gmlp_small(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, patch_size: int = 4,
               dim: int = 192, depth: int = 8, ffn_ratio: float = 4, drop_path: float = 0.1) -> GMLP:
    """gMLP-small: 4 x 4 patches, dim 192, 8 blocks, ffn 768.

    About 1.8M parameters and 127M multiply-adds at 32 x 32 x 3, 10 classes.
    """
    return GMLP(num_classes, in_channels, image_size, patch_size, dim, depth, ffn_ratio, drop_path)
