"""Vision Transformer for small images, optionally with Shifted Patch Tokenization and Locality Self-Attention.

The trunk is timm's ``VisionTransformer`` (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021,
https://arxiv.org/abs/2010.11929) with a class token; ``features`` is timm's pre-logits vector (the final-normed class
token, ``embed_dim``-d) and ``head`` is ``nn.Linear(embed_dim, num_classes)``.

The defaults (32x32 input, 4x4 patches, ``embed_dim`` 192, depth 9, 12 heads of 16 dims, MLP ratio 2, stochastic depth
0.1) are the small-dataset settings of Lee, Lee & Song, "Vision Transformer for Small-Size Datasets", 2021,
https://arxiv.org/abs/2112.13492, which also introduced the two switchable components implemented here:

* :class:`ShiftedPatchTokenization` (SPT): the image is concatenated with its four diagonal half-patch shifts
  (5 x C channels), cut into patches, flattened, layer-normed and linearly projected. It is a drop-in timm
  ``embed_layer``.
* :class:`LocalitySelfAttention` (LSA): self-attention with a learnable (per-head) temperature and diagonal masking,
  so a token cannot attend to itself. It is a drop-in timm ``attn_layer``.

Reference implementation of both: https://github.com/aanna0701/SPT_LSA_ViT.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from timm.layers import Attention, Format, PatchEmbed, to_2tuple, trunc_normal_
from timm.layers.attention import maybe_add_mask, resolve_self_attn_mask
from timm.layers.trace_utils import _assert
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .base import Backbone
from .weights import load_weights

__all__ = ["ViT", "vit", "ShiftedPatchTokenization", "LocalitySelfAttention"]


class ShiftedPatchTokenization(nn.Module):
    """Shifted Patch Tokenization (Lee, Lee & Song 2021), usable as timm's ``embed_layer``.

    ``[x, shift(x, -s, -s), shift(x, -s, +s), shift(x, +s, -s), shift(x, +s, +s)]`` (``s`` = half a patch, zero
    padded) -> non-overlapping ``patch_size`` patches flattened in ``(p1 p2 c)`` order -> LayerNorm -> Linear. Takes
    the same keyword arguments as ``timm.layers.PatchEmbed`` and exposes ``num_patches``, ``grid_size``,
    ``feat_ratio()`` and ``dynamic_feat_size()``.
    """

    output_fmt: Format

    def __init__(
        self,
        img_size: int | tuple[int, int] | None = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        norm_layer: Callable[..., nn.Module] | None = None,
        flatten: bool = True,
        output_fmt: str | None = None,
        bias: bool = True,
        strict_img_size: bool = True,
        dynamic_img_pad: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.patch_size = to_2tuple(patch_size)
        if img_size is None:
            self.img_size = self.grid_size = self.num_patches = None
        else:
            self.img_size = to_2tuple(img_size)
            self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
            self.num_patches = self.grid_size[0] * self.grid_size[1]
        if output_fmt is not None:
            self.output_fmt = Format(output_fmt)
        else:
            self.output_fmt = Format.NLC if flatten else Format.NCHW
        self.strict_img_size = strict_img_size
        self.dynamic_img_pad = dynamic_img_pad
        self.shift = (self.patch_size[0] // 2, self.patch_size[1] // 2)

        patch_dim = 5 * in_chans * self.patch_size[0] * self.patch_size[1]
        self.patch_norm = nn.LayerNorm(patch_dim, **dd)
        self.proj = nn.Linear(patch_dim, embed_dim, bias=bias, **dd)
        self.norm = norm_layer(embed_dim, **dd) if norm_layer else nn.Identity()

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return max(self.patch_size) if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        if self.dynamic_img_pad:
            return -(-img_size[0] // self.patch_size[0]), -(-img_size[1] // self.patch_size[1])
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def shift_cat(self, x: Tensor) -> Tensor:
        """Concatenate ``x`` with its four diagonal half-patch shifts: ``(N, C, H, W) -> (N, 5C, H, W)``."""
        sh, sw = self.shift
        H, W = x.shape[-2:]
        x_pad = F.pad(x, (sw, sw, sh, sh))
        shifted = [x_pad[..., dy:dy + H, dx:dx + W] for dy, dx in ((0, 0), (0, 2 * sw), (2 * sh, 0), (2 * sh, 2 * sw))]
        return torch.cat([x, *shifted], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        ph, pw = self.patch_size
        if self.img_size is not None:
            if self.strict_img_size:
                _assert(H == self.img_size[0], f"Input height ({H}) doesn't match model ({self.img_size[0]}).")
                _assert(W == self.img_size[1], f"Input width ({W}) doesn't match model ({self.img_size[1]}).")
            elif not self.dynamic_img_pad:
                _assert(H % ph == 0, f"Input height ({H}) should be divisible by patch size ({ph}).")
                _assert(W % pw == 0, f"Input width ({W}) should be divisible by patch size ({pw}).")
        if self.dynamic_img_pad:
            x = F.pad(x, (0, (pw - W % pw) % pw, 0, (ph - H % ph) % ph))
            H, W = x.shape[-2:]

        x = self.shift_cat(x)
        gh, gw = H // ph, W // pw
        x = x.reshape(B, 5 * C, gh, ph, gw, pw).permute(0, 2, 4, 3, 5, 1).reshape(B, gh, gw, ph * pw * 5 * C)
        x = self.norm(self.proj(self.patch_norm(x)))  # NHWC
        if self.output_fmt == Format.NLC:
            x = x.flatten(1, 2)
        elif self.output_fmt == Format.NCHW:
            x = x.permute(0, 3, 1, 2)
        elif self.output_fmt == Format.NCL:
            x = x.flatten(1, 2).transpose(1, 2)
        return x


class LocalitySelfAttention(Attention):
    """Locality Self-Attention (Lee, Lee & Song 2021), usable as timm's ``attn_layer``.

    Standard multi-head self-attention except that (1) the softmax temperature is learned, one per head, as a
    multiplicative ``scale`` initialised to ``head_dim ** -0.5`` (i.e. temperature ``sqrt(head_dim)``), and (2) the
    diagonal of the attention logits is set to ``-inf`` so each token attends only to the *other* tokens.
    :meth:`attention_weights` returns the softmax probabilities (diagonal exactly 0) for inspection. Not meant for
    causal masking: the first token would have nothing left to attend to.
    """

    def __init__(self, dim: int, num_heads: int = 8, **kwargs: Any) -> None:
        super().__init__(dim, num_heads=num_heads, **kwargs)
        dd = {"device": kwargs.get("device"), "dtype": kwargs.get("dtype")}
        del self.scale  # the float attribute of Attention becomes a learnable per-head parameter
        self.scale = nn.Parameter(torch.full((num_heads,), self.head_dim**-0.5, **dd))

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        return q * self.scale.view(1, -1, 1, 1).to(q.dtype), k, v

    def _attn_bias(self, q: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        N = q.shape[-2]
        diag = torch.eye(N, dtype=torch.bool, device=q.device)
        bias = torch.zeros(N, N, dtype=q.dtype, device=q.device).masked_fill_(diag, float("-inf"))
        extra = resolve_self_attn_mask(N, q, attn_mask, is_causal)
        return maybe_add_mask(bias, extra)

    def attention_weights(self, x: Tensor) -> Tensor:
        """Softmax attention probabilities ``(B, num_heads, N, N)`` for tokens ``x`` ``(B, N, dim)`` (no dropout)."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) + self._attn_bias(q)).softmax(dim=-1)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        q, k, v = self._qkv(x)
        bias = self._attn_bias(q, attn_mask, is_causal)

        if self.fused_attn:
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.0, scale=1.0
            )
        else:
            attn = (q @ k.transpose(-2, -1) + bias).softmax(dim=-1)
            x = self.attn_drop(attn) @ v

        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


class ViT(Backbone):
    """Vision Transformer for small images (timm ``VisionTransformer``), with optional SPT and LSA (Lee et al. 2021).

    Args:
        num_classes: Number of output classes of ``head``.
        in_channels: Image channels.
        image_size: Side of the (square) input images; must be divisible by ``patch_size``.
        patch_size: Side of the square patches.
        embed_dim: Token width (also the feature dimension); must be divisible by ``num_heads``.
        depth: Number of transformer blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP hidden width as a multiple of ``embed_dim``.
        drop_path_rate: Stochastic-depth rate (linearly increasing over the blocks, active in training only).
        shifted_patch_tokens: Use :class:`ShiftedPatchTokenization` instead of the plain patch embedding.
        locality_self_attention: Use :class:`LocalitySelfAttention` in every block.
        mean: Per-channel mean of the training data (normalisation is applied inside the model); ``None`` = 0.
        std: Per-channel standard deviation of the training data; ``None`` = 1.
        weights: Optional path to a local state dict / Lightning checkpoint loaded after construction.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        patch_size: int = 4,
        embed_dim: int = 192,
        depth: int = 9,
        num_heads: int = 12,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        shifted_patch_tokens: bool = False,
        locality_self_attention: bool = False,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        weights: str | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, image_size=image_size, mean=mean, std=std)
        if patch_size < 1 or image_size % patch_size != 0:
            raise ValueError(
                f"ViT needs image_size divisible by patch_size, got image_size={image_size} and "
                f"patch_size={patch_size}. Choose a patch_size that divides {image_size} or resize the data."
            )
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}).")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}.")

        self.vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            in_chans=in_channels,
            num_classes=0,
            global_pool="token",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            embed_layer=ShiftedPatchTokenization if shifted_patch_tokens else PatchEmbed,
            attn_layer=LocalitySelfAttention if locality_self_attention else Attention,
        )
        self.num_features = embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        trunc_normal_(self.head.weight, std=0.02)  # timm's ViT head init
        nn.init.zeros_(self.head.bias)

        self._record_config(
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            shifted_patch_tokens=shifted_patch_tokens,
            locality_self_attention=locality_self_attention,
            mean=mean,
            std=std,
        )
        if weights is not None:
            load_weights(self, weights)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)


def vit(**kwargs: Any) -> ViT:
    """Build a :class:`ViT`; keyword arguments as for the class."""
    return ViT(**kwargs)
