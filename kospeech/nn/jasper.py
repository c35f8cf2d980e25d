"""Jasper's convolutional body, registered as ``encoder/jasper``.

Jasper (Li et al. 2019, "Jasper: An End-to-End Convolutional Neural Acoustic Model") is a
deep stack of plain 1D convolutions: a strided prolog, B blocks of R sub-blocks
(conv -> batch norm -> ReLU -> dropout), and an epilog (a wide dilated convolution and a 1x1).
With *dense residual* connections ("DR") every block receives, before its last activation,
the sum of a 1x1 projection + batch norm of the prolog output and of every earlier block's
output, as in DenseNet. The two presets are the original KoSpeech's: ``10x5`` and ``5x3``.

Every layer here is padding-invariant: activations are zero past each utterance's length,
the convolutions therefore see zeros there as they would with no batch mates, and the batch
norms (:class:`~kospeech.nn.conv_encoder.MaskedBatchNorm1d`) count real frames only. An
utterance's output is the same alone or in any batch, in training as in evaluation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kospeech.errors import ConfigError
from kospeech.nn.conv_encoder import MaskedBatchNorm1d
from kospeech.nn.mask import lengths_to_mask
from kospeech.registry import register

#: the original KoSpeech's configurations (kospeech/models/jasper/configs.py there): per-block
#: output channels, kernel sizes and dropout, and the sub-blocks per block
PRESETS: dict[str, dict[str, Any]] = {
    "10x5": {
        "channels": [256, 256, 384, 384, 512, 512, 640, 640, 768, 768],
        "kernel_sizes": [11, 11, 13, 13, 17, 17, 21, 21, 25, 25],
        "dropouts": [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3],
        "num_sub_blocks": 5,
    },
    "5x3": {
        "channels": [256, 384, 512, 640, 768],
        "kernel_sizes": [11, 13, 17, 21, 25],
        "dropouts": [0.2, 0.2, 0.2, 0.3, 0.3],
        "num_sub_blocks": 3,
    },
}


def _mask(lengths: torch.Tensor, t: int, dtype: torch.dtype) -> torch.Tensor:
    return lengths_to_mask(lengths, t)[:, None, :].to(dtype)


class MaskedConv1d(nn.Conv1d):
    """A 1D convolution with "same" padding that also returns the output lengths.

    Its input must be zero past each length (every module here keeps that invariant); its
    output past the new lengths is not zero: the batch norm that follows masks it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 dilation: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=(kernel_size // 2) * dilation, dilation=dilation, bias=bias)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        k, s, d, p = self.kernel_size[0], self.stride[0], self.dilation[0], self.padding[0]
        return torch.div(lengths + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1


class JasperSubBlock(nn.Module):
    """conv -> masked batch norm -> (+ residual) -> ReLU -> dropout; zero past the lengths."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float, *,
                 stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = MaskedConv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation)
        self.norm = MaskedBatchNorm1d(out_channels, eps=1e-3)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, T) zero past the lengths, mask (B, 1, T') of the output -> (B, C', T')."""
        y = self.norm(self.conv(x), mask)
        if residual is not None:
            y = y + residual
        return self.dropout(self.activation(y)) * mask


class JasperBlock(nn.Module):
    """R sub-blocks; the dense residual enters the last one before its activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float,
                 num_sub_blocks: int, residual_channels: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            JasperSubBlock(in_channels if i == 0 else out_channels, out_channels, kernel_size, dropout)
            for i in range(num_sub_blocks)
        )
        # one 1x1 projection + batch norm per earlier output (prolog, then each earlier block)
        self.residual_convs = nn.ModuleList(MaskedConv1d(c, out_channels, 1) for c in residual_channels)
        self.residual_norms = nn.ModuleList(MaskedBatchNorm1d(out_channels, eps=1e-3) for _ in residual_channels)

    def forward(self, x: torch.Tensor, earlier: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        residual = sum(
            norm(conv(prev), mask) for prev, conv, norm in zip(earlier, self.residual_convs, self.residual_norms)
        )
        for layer in self.layers[:-1]:
            x = layer(x, mask)
        return self.layers[-1](x, mask, residual)


@register("encoder", "jasper")
class JasperEncoder(nn.Module):
    """Jasper BxR with dense residuals: prolog, B blocks, epilog; ``output_dim`` channels out.

    The preset fixes the blocks' schedule; the options after it override parts of it, which is
    how a CPU-sized Jasper is written (``recipes/mini/conf/jasper.yaml``). The time axis is
    subsampled by the prolog's ``stride`` only. With ``10x5`` and a 2,038-unit vocabulary the
    ``jasper`` model has the original's 334,740,706 parameters; with ``5x3``, 111,817,442.

    Args:
        preset: ``10x5`` or ``5x3`` (blocks x sub-blocks), the original's configurations.
        channels: output channels of each block (their number is B); default from the preset.
        kernel_sizes: kernel of each block (odd); default from the preset.
        num_sub_blocks: R, sub-blocks per block; default from the preset.
        dropout: one dropout for every layer instead of the preset's schedule (0.2-0.4).
        prolog_channels: channels of the strided first convolution.
        prolog_kernel_size: its kernel.
        stride: its stride, the encoder's time subsampling.
        epilog_channels: the two epilog convolutions' channels; the last is ``output_dim``.
        epilog_kernel_size: kernel of the first epilog convolution (dilation 2).
    """

    def __init__(
        self,
        *,
        input_dim: int,
        preset: str = "10x5",
        channels: list[int] | None = None,
        kernel_sizes: list[int] | None = None,
        num_sub_blocks: int | None = None,
        dropout: float | None = None,
        prolog_channels: int = 256,
        prolog_kernel_size: int = 11,
        stride: int = 2,
        epilog_channels: list[int] = (896, 1024),
        epilog_kernel_size: int = 29,
    ) -> None:
        super().__init__()
        where = "encoder 'jasper'"
        if preset not in PRESETS:
            raise ConfigError(f"{where}: unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
        base = PRESETS[preset]
        channels = list(channels if channels is not None else base["channels"])
        kernel_sizes = list(kernel_sizes if kernel_sizes is not None else base["kernel_sizes"])
        num_sub_blocks = num_sub_blocks if num_sub_blocks is not None else base["num_sub_blocks"]
        if len(kernel_sizes) != len(channels):
            raise ConfigError(f"{where}: channels ({len(channels)} blocks) and kernel_sizes "
                              f"({len(kernel_sizes)}) must have one entry per block")
        if len(channels) < 1 or num_sub_blocks < 1:
            raise ConfigError(f"{where}: needs at least one block and one sub-block")
        bad = [k for k in [*kernel_sizes, prolog_kernel_size, epilog_kernel_size] if k < 1 or k % 2 == 0]
        if bad:
            raise ConfigError(f"{where}: kernel sizes must be odd and positive, got {bad[0]}")
        if len(epilog_channels) != 2:
            raise ConfigError(f"{where}: epilog_channels takes two numbers, got {list(epilog_channels)}")
        if stride < 1:
            raise ConfigError(f"{where}: stride must be >= 1, got {stride}")
        if dropout is not None:
            dropouts, prolog_p, epilog_p = [dropout] * len(channels), dropout, dropout
        elif channels == base["channels"]:
            dropouts, prolog_p, epilog_p = list(base["dropouts"]), 0.2, 0.4
        else:  # a custom width schedule: the preset's lower rate throughout
            dropouts, prolog_p, epilog_p = [0.2] * len(channels), 0.2, 0.4

        self.prolog = JasperSubBlock(input_dim, prolog_channels, prolog_kernel_size, prolog_p, stride=stride)
        inputs = [prolog_channels, *channels[:-1]]
        self.blocks = nn.ModuleList(
            JasperBlock(inputs[i], channels[i], kernel_sizes[i], dropouts[i], num_sub_blocks, inputs[: i + 1])
            for i in range(len(channels))
        )
        self.epilog = nn.ModuleList([
            JasperSubBlock(channels[-1], epilog_channels[0], epilog_kernel_size, epilog_p, dilation=2),
            JasperSubBlock(epilog_channels[0], epilog_channels[1], 1, epilog_p),
        ])
        self.output_dim = epilog_channels[1]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), lengths (B,) -> (B, T', output_dim) zero past the new lengths, lengths (B,)."""
        x = x.transpose(1, 2) * _mask(lengths, x.size(1), x.dtype)
        lengths = self.prolog.conv.out_lengths(lengths)
        t = self.prolog.conv.out_lengths(torch.tensor(x.size(2))).item()
        mask = _mask(lengths, t, x.dtype)
        x = self.prolog(x, mask)
        earlier = [x]
        for block in self.blocks:
            x = block(x, earlier, mask)
            earlier.append(x)
        for layer in self.epilog:
            x = layer(x, mask)
        return x.transpose(1, 2), lengths
