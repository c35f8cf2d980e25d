"""A convolution-only encoder, registered as ``encoder/separable_conv``.

Time-channel separable 1D convolutions (QuartzNet, Kriman et al. 2020; in the spirit of
Hannun et al.'s TDS blocks, 2019): every block is a depthwise convolution over time, a
pointwise (1x1) convolution across channels, batch norm, ReLU and dropout, with a residual
connection. There is no recurrence, so an update costs a few large matrix products instead of
one small product per frame per layer, which is what bounds a BiGRU on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
from torch import nn

from kospeech.errors import ConfigError
from kospeech.nn.dropout import relu_dropout
from kospeech.nn.extractors import build_extractor, projection
from kospeech.nn.mask import lengths_to_mask
from kospeech.nn.norm import MaskedBatchNorm1d
from kospeech.registry import component, register


class SeparableConvBlock(nn.Module):
    """Depthwise conv (time) -> pointwise conv (channels) -> masked BN -> ReLU -> dropout, + x.

    Runs on (B, T, C) activations, the layout in which the pointwise convolution is one matrix
    product over every frame and oneDNN's depthwise convolution takes its fast (channels-last)
    path; the parameters are ``nn.Conv1d``'s, so checkpoints are those of a (B, C, T) block.
    """

    def __init__(self, dim: int, kernel_size: int, dropout: float, look_ahead: int | None = None) -> None:
        super().__init__()
        # centred (the default), or ``look_ahead`` frames of future and the rest of the past
        self.pad = (kernel_size // 2,) * 2 if look_ahead is None else (kernel_size - 1 - look_ahead, look_ahead)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, groups=dim)
        self.pointwise = nn.Conv1d(dim, dim, 1, bias=False)
        self.norm = MaskedBatchNorm1d(dim)
        self.dropout = nn.Dropout(dropout)  # its rate, applied fused with the ReLU (relu_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C), zero past each length; mask (B, T, 1); ``real``: the indices of the real
        frames among the B * T (training only, where at least two).

        The norm zeroes the padding, and ReLU and dropout keep zeros zero, so the residual
        branch needs no mask of its own: the output stays zero past each length. In training
        the frame-wise layers (pointwise, norm, ReLU, dropout) run on the real frames alone,
        gathered: the norm is then PyTorch's own batch norm, whose statistics are those of the
        real frames, at a third of the masked norm's cost."""
        left, right = self.pad
        # (B, C, 1, T) views of the (B, T, C) memory: a channels-last image one row high. The
        # convolution pads symmetrically; a look-ahead pads the time axis by hand first.
        image = (x if left == right else nn.functional.pad(x, (0, 0, left, right))).transpose(1, 2).unsqueeze(2)
        h = nn.functional.conv2d(image, self.depthwise.weight.unsqueeze(2), None,
                                 padding=(0, left) if left == right else 0, groups=self.depthwise.groups)
        # the bias after the convolution: inside it, its gradient was a third of the convolution's backward
        h = h.squeeze(2).transpose(1, 2) + self.depthwise.bias
        pointwise = self.pointwise.weight.squeeze(-1)
        if real is not None:
            frames = h.reshape(-1, h.size(-1)).index_select(0, real)
            y = relu_dropout(self.norm(nn.functional.linear(frames, pointwise)), self.dropout.p, self.training)
            return x + torch.zeros_like(x).view(-1, x.size(-1)).index_copy(0, real, y).view_as(x)
        y = self.norm(nn.functional.linear(h, pointwise), mask, channels_last=True)
        return x + relu_dropout(y, self.dropout.p, self.training)


@register("encoder", "separable_conv")
class SeparableConvEncoder(nn.Module):
    """A convolutional extractor, then residual time-channel separable convolution blocks.

    The receptive field is ``num_blocks * (kernel_size - 1) + 1`` frames after the extractor
    (10 blocks of kernel 11 after a x4 subsampling: 101 frames, 4 s), enough context for
    characters or jamo. Outputs past an utterance's length are zero and do not depend on batch
    padding, in training (masked batch norm) as in evaluation.

    Why on a CPU budget: per update it learns about as fast as a BiGRU of similar width, and an
    update costs a fraction of one (measured in ``recipes/mini/RESULTS.md``).

    Args:
        dim: channels of every block (``output_dim``).
        num_blocks: residual blocks.
        kernel_size: depthwise kernel over time (odd).
        dropout: after each block's activation.
        extractor: front end (default ``conv2d_subsampling`` x4 to ``dim``); ``null`` feeds the
            features, projected to ``dim``.
        look_ahead: frames of the future each block sees (null: ``kernel_size // 2``, centred).
            A stream decides a frame once ``num_blocks * look_ahead`` frames after it (plus the
            extractor's few) have arrived, so this bounds a streaming model's latency: 1 with
            10 blocks after a x4 subsampling is 0.4 s; the rest of the kernel looks back.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        dim: int = 256,
        num_blocks: int = 10,
        kernel_size: int = 11,
        dropout: float = 0.1,
        extractor: component("extractor", "input_dim") = {"name": "conv2d_subsampling", "subsampling": 4},
        look_ahead: int | None = None,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"encoder 'separable_conv': kernel_size must be odd and positive, got {kernel_size}")
        if look_ahead is not None and not 0 <= look_ahead < kernel_size:
            raise ConfigError(f"encoder 'separable_conv': look_ahead must be in [0, kernel_size), got {look_ahead}")
        if num_blocks < 1:
            raise ConfigError(f"encoder 'separable_conv': num_blocks must be >= 1, got {num_blocks}")
        self.extractor, feature_dim = build_extractor(extractor, input_dim, "encoder.extractor")
        self.project = projection(feature_dim, dim)
        self.blocks = nn.ModuleList(
            SeparableConvBlock(dim, kernel_size, dropout, look_ahead) for _ in range(num_blocks)
        )
        self.output_dim = dim

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        *,
        tap: Callable[[torch.Tensor], torch.Tensor] | None = None,
        tap_after: Collection[int] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), lengths (B,) -> (B, T', dim), lengths (B,).

        ``tap`` (intermediate CTC) sees the hidden states (B, T', dim) after each block whose
        1-based index is in ``tap_after`` and returns the states the next block gets.
        """
        if self.extractor is not None:
            x, lengths = self.extractor(x, lengths)
        mask = lengths_to_mask(lengths, x.size(1))[:, :, None].to(x.dtype)
        y = self.project(x) * mask
        real = mask.view(-1).nonzero().squeeze(1) if self.training else None
        real = real if real is not None and real.numel() > 1 else None  # batch norm needs two frames
        for i, block in enumerate(self.blocks, 1):
            y = block(y, mask, real)
            if tap is not None and i in tap_after:
                y = tap(y) * mask
        return y, lengths
