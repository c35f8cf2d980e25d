"""Convolutional front ends that turn (B, T, D) features into shorter (B, T', H) sequences.

Every extractor (kind ``extractor``) takes ``input_dim`` from its parent, exposes
``output_dim`` and maps ``forward(x, lengths) -> (y, lengths')``. Frames past an utterance's
length are zeroed after every layer, so padding added to batch an utterance with longer ones
never leaks into its real frames (a utterance decodes the same alone or in a batch).

Convolutions here work on a (B, C, T, F) image: time is axis 2, frequency axis 3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from kospeech.errors import ConfigError
from kospeech.nn.mask import lengths_to_mask
from kospeech.registry import build, register

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "hardtanh": lambda: nn.Hardtanh(0, 20, inplace=True),
    "relu": lambda: nn.ReLU(inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(inplace=True),
    "gelu": lambda: nn.GELU(),
    "silu": lambda: nn.SiLU(),
}


def make_activation(name: str, where: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"{where}: unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _out_len(module: nn.Module, lengths: torch.Tensor) -> torch.Tensor:
    """Frames left along the time axis (dim 2) after ``module``; other modules keep lengths."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):

        def pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
            return v if isinstance(v, tuple) else (v, v)

        k, s, p, d = (pair(module.kernel_size)[0], pair(module.stride)[0], pair(module.padding)[0],
                      pair(module.dilation)[0])
        return torch.div(lengths + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1
    return lengths


def _freq_out(module: nn.Module, size: int) -> int:
    """Size of the frequency axis (dim 3) after ``module``."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):

        def second(v: int | tuple[int, ...]) -> int:
            return v[1] if isinstance(v, tuple) else v

        k, s, p, d = (second(module.kernel_size), second(module.stride), second(module.padding),
                      second(module.dilation))
        return (size + 2 * p - d * (k - 1) - 1) // s + 1
    return size


#: activations that map 0 to 0 (zeroed padding stays zero through them)
_ZERO_PRESERVING = (nn.Hardtanh, nn.ReLU, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Dropout, nn.Dropout2d)
#: activations that never decrease (max pooling commutes with them)
_MONOTONE = (nn.Hardtanh, nn.ReLU, nn.ELU)


def _time_aligned_pool(module: nn.Module) -> bool:
    """A max pool whose real output frames read only real input frames (time kernel = stride,
    no padding): what lies in the padding cannot reach them."""
    if not isinstance(module, nn.MaxPool2d):
        return False

    def first(v: int | tuple[int, ...]) -> int:
        return v[0] if isinstance(v, tuple) else v

    stride = first(module.stride) if module.stride is not None else first(module.kernel_size)
    return (first(module.kernel_size) == stride and first(module.padding) == 0 and first(module.dilation) == 1
            and not module.ceil_mode)


def _padding_view(x: torch.Tensor) -> tuple[torch.Tensor, tuple[slice | None, ...]]:
    """x (B, C, T, F) as the array its memory holds, (B, C, T, F) or for a channels-last tensor
    (B, T, F, C) (mixed layouts take a slow elementwise path), and how a (B, T) mask indexes it."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return x.permute(0, 2, 3, 1), (slice(None), slice(None), None, None)
    return x, (slice(None), None, slice(None), None)


def _zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x (B, C, T, F) with the frames past each length zeroed, in x's own memory layout."""
    view, index = _padding_view(x)
    out = view.masked_fill(~lengths_to_mask(lengths, x.size(2))[index], 0.0)
    return out if view is x else out.permute(0, 3, 1, 2)


class _ReLUZeroPadding(torch.autograd.Function):
    """ReLU, then the frames past each length zeroed, in one fresh tensor: its backward is
    ReLU's on that output (zero at the padding, so no gradient goes there). As two layers,
    the zeroing copied the activation out of place both ways (a seventh of a small
    convolutional front end's update)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x)
        view, index = _padding_view(y)
        view.masked_fill_(~lengths_to_mask(lengths, x.size(2))[index], 0.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, y, 0), None


def _monotone(module: nn.Module) -> bool:
    return isinstance(module, _MONOTONE) or (isinstance(module, nn.LeakyReLU) and module.negative_slope >= 0)


class MaskCNN(nn.Module):
    """Runs a ``Sequential`` of 2-D layers so that frames past each utterance's length never
    reach a real frame: an utterance gives the same output alone or padded in a batch.

    Every layer may write into the padding (a convolution reads real frames into it, batch norm
    shifts it), so the padding is zeroed again, but only where it matters: before a layer that
    mixes frames or takes statistics over them (convolution, batch norm, an unaligned pool) and
    at the end; through the activations, which keep zeros zero, it is not. A monotone activation
    followed by a time-aligned max pool runs after the pool instead, on a quarter of the values
    (max pooling commutes with a non-decreasing function). A ReLU whose output is zeroed next is
    fused with the zeroing in training. All three only skip work: the outputs and gradients are
    those of zeroing after every layer, on the full-size tensors, in the given order.

    ``channels_last`` runs the stack in that memory layout: oneDNN's convolutions and max pools
    are faster there for a wide stack (the VGG; not for the Deep Speech 2 or subsampling ones).
    """

    def __init__(self, sequential: nn.Sequential, *, channels_last: bool = False) -> None:
        super().__init__()
        self.sequential = sequential
        self.channels_last = channels_last
        self._plan = self._make_plan(list(sequential))
        # steps that are a ReLU whose output the next step zeroes: one fused pass instead
        self._relu_then_zero = {
            step for step, (indices, _) in enumerate(self._plan[:-1])
            if len(indices) == 1 and type(sequential[indices[0]]) is nn.ReLU and self._plan[step + 1][1]
        }

    @staticmethod
    def _make_plan(modules: list[nn.Module]) -> list[tuple[list[int], bool]]:
        """Steps of (module indices to run in order, zero the padding before them)."""
        plan: list[tuple[list[int], bool]] = []
        dirty = True  # the input's padding is whatever the collate and CMVN left there
        i = 0
        while i < len(modules):
            module = modules[i]
            if _monotone(module) and i + 1 < len(modules) and _time_aligned_pool(modules[i + 1]):
                plan.append(([i + 1, i], False))  # pool first, then the activation: the pool reads real frames only
                dirty, i = True, i + 2
                continue
            needs_clean = not isinstance(module, _ZERO_PRESERVING) and not _time_aligned_pool(module)
            plan.append(([i], dirty and needs_clean))
            if needs_clean:
                dirty = False
            if not isinstance(module, _ZERO_PRESERVING):
                dirty = True
            i += 1
        plan.append(([], dirty))
        return plan

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, T, F), lengths (B,) -> masked output and the new lengths."""
        # a batch with no padding keeps none through every layer (each shrinks the time axis as
        # it shrinks the lengths), so there is nothing to zero: one host check instead of a pass
        # over every feature map
        padded = bool((lengths < x.size(2)).any())
        zeroed = False  # the padding was zeroed with the last activation
        for step, (indices, zero_first) in enumerate(self._plan):
            if zero_first and padded and not zeroed:
                x = _zero_padding(x, lengths)
            zeroed = False
            for i in indices:
                module = self.sequential[i]
                if self.channels_last:
                    # the activations carry the layout (a one-channel input is both layouts, so
                    # the first convolution's output is where it starts); the weights keep theirs
                    # so that initialisation fills them as it always has
                    x = x.contiguous(memory_format=torch.channels_last)
                # fused where a backward follows; inference (and an export's trace) runs the layers
                if padded and step in self._relu_then_zero and torch.is_grad_enabled():
                    x, zeroed = _ReLUZeroPadding.apply(x, lengths), True
                else:
                    x = module(x)
                lengths = _out_len(module, lengths).clamp(min=0)
        return x, lengths

    def output_freq(self, input_freq: int) -> int:
        for module in self.sequential:
            input_freq = _freq_out(module, input_freq)
        return input_freq

    def output_channels(self) -> int:
        return [m for m in self.sequential if isinstance(m, nn.Conv2d)][-1].out_channels


class Extractor(nn.Module):
    """Base of the extractors: (B, T, D) features and lengths -> (B, T', output_dim), lengths'."""

    output_dim: int

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        raise NotImplementedError


class _ConvStackExtractor(Extractor):
    """A MaskCNN over a (B, 1, T, D) image, flattened to (B, T', C * F')."""

    def _setup(self, input_dim: int, sequential: nn.Sequential, *, channels_last: bool = False) -> None:
        self.input_dim = input_dim
        self.cnn = MaskCNN(sequential, channels_last=channels_last)
        freq = self.cnn.output_freq(input_dim)
        if freq < 1:
            raise ConfigError(
                f"{type(self).__name__}: input_dim={input_dim} is too small for its convolutions "
                f"(frequency axis would shrink to {freq}); use more mel bins or another extractor"
            )
        self.output_dim = self.cnn.output_channels() * freq

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, lengths = self.cnn(x.unsqueeze(1), lengths)
        b, c, t, f = y.shape
        return y.permute(0, 2, 1, 3).reshape(b, t, c * f), lengths


@register("extractor", "vgg")
class VGGExtractor(_ConvStackExtractor):
    """The VGG front end of KoSpeech's LAS listener (Hori et al. 2017, "Advances in joint
    CTC-attention based E2E ASR with a deep CNN encoder and RNN-LM").

    Four 3x3 convolutions (64, 64, 128, 128 channels, no bias) with batch norm and two 2x2 max
    pools: time and frequency shrink by 4, ``output_dim = 128 * (input_dim // 4)`` (2560 for
    80 mel bins).

    Args:
        activation: hardtanh (clipped ReLU, 0..20, as KoSpeech), relu, elu, leaky_relu, gelu, silu.
    """

    def __init__(self, *, input_dim: int, activation: str = "hardtanh") -> None:
        super().__init__()
        act = make_activation(activation, "extractor 'vgg'")
        self._setup(
            input_dim,
            nn.Sequential(
                nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False),
                act,
                nn.BatchNorm2d(64),
                nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1, bias=False),
                act,
                nn.MaxPool2d(2, stride=2),
                nn.BatchNorm2d(64),
                nn.Conv2d(64, 128, kernel_size=3, stride=1, padding=1, bias=False),
                act,
                nn.BatchNorm2d(128),
                nn.Conv2d(128, 128, kernel_size=3, stride=1, padding=1, bias=False),
                act,
                nn.MaxPool2d(2, stride=2),
            ),
            channels_last=True,
        )


@register("extractor", "deepspeech2")
class DeepSpeech2Extractor(_ConvStackExtractor):
    """The convolution stack of Deep Speech 2 (Amodei et al. 2016), as KoSpeech uses it.

    Layer 1: ``channels`` (32) filters of 11 frames x 41 bins, stride 2 in time and frequency;
    layer 2: ``channels`` filters 11 x 21, stride 1 in time and 2 in frequency; an optional
    layer 3: ``3 * channels`` (96) filters like layer 2. Each is followed by batch norm and the
    activation. Time shrinks by 2, frequency by 2 per layer: ``output_dim`` is the last layer's
    channels times ``ceil(input_dim / 2**num_layers)`` (640 for 80 bins and 2 layers).

    Args:
        num_layers: 2 or 3 convolution layers.
        channels: filters of layers 1 and 2 (32 in the paper; fewer for small experiments).
        activation: hardtanh (the paper's clipped ReLU), relu, elu, leaky_relu, gelu, silu.
    """

    def __init__(
        self, *, input_dim: int, num_layers: int = 2, channels: int = 32, activation: str = "hardtanh"
    ) -> None:
        super().__init__()
        if num_layers not in (2, 3):
            raise ConfigError(f"extractor 'deepspeech2': num_layers must be 2 or 3, got {num_layers}")
        act = make_activation(activation, "extractor 'deepspeech2'")
        layers: list[nn.Module] = [
            nn.Conv2d(1, channels, kernel_size=(11, 41), stride=(2, 2), padding=(5, 20), bias=False),
            nn.BatchNorm2d(channels),
            act,
            nn.Conv2d(channels, channels, kernel_size=(11, 21), stride=(1, 2), padding=(5, 10), bias=False),
            nn.BatchNorm2d(channels),
            act,
        ]
        if num_layers == 3:
            layers += [
                nn.Conv2d(channels, 3 * channels, kernel_size=(11, 21), stride=(1, 2), padding=(5, 10), bias=False),
                nn.BatchNorm2d(3 * channels),
                act,
            ]
        self._setup(input_dim, nn.Sequential(*layers))


_SUBSAMPLING_PLANS: dict[int, list[tuple[int, int]]] = {
    # (kernel, stride) of each convolution, as in ESPnet's Conv2dSubsampling{,6,8}
    4: [(3, 2), (3, 2)],
    6: [(3, 2), (5, 3)],
    8: [(3, 2), (3, 2), (3, 2)],
}


@register("extractor", "conv2d_subsampling")
class Conv2dSubsampling(Extractor):
    """Strided 3x3 (and 5x5) convolutions with ReLU then a linear layer, the front end of
    Transformer and Conformer ASR (Dong et al. 2018; Gulati et al. 2020; ESPnet's
    Conv2dSubsampling). Shortens time by ``subsampling`` before self-attention, whose cost
    grows with the square of the length.

    Args:
        output_dim: size of the output vectors (the encoder's model dimension).
        subsampling: 4, 6 or 8.
        channels: convolution channels; ``None`` uses ``output_dim``.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        output_dim: int = 256,
        subsampling: int = 4,
        channels: int | None = None,
    ) -> None:
        super().__init__()
        if subsampling not in _SUBSAMPLING_PLANS:
            raise ConfigError(
                f"extractor 'conv2d_subsampling': subsampling must be one of "
                f"{', '.join(map(str, _SUBSAMPLING_PLANS))}, got {subsampling}"
            )
        channels = channels or output_dim
        layers: list[nn.Module] = []
        in_ch = 1
        for k, s in _SUBSAMPLING_PLANS[subsampling]:
            layers += [nn.Conv2d(in_ch, channels, kernel_size=k, stride=s), nn.ReLU()]
            in_ch = channels
        self.subsampling = subsampling
        self.input_dim = input_dim
        self.cnn = MaskCNN(nn.Sequential(*layers))
        freq = self.cnn.output_freq(input_dim)
        if freq < 1:
            raise ConfigError(
                f"extractor 'conv2d_subsampling': input_dim={input_dim} is too small for subsampling {subsampling}"
            )
        self.min_frames = self._min_frames()
        self.out = nn.Linear(channels * freq, output_dim)
        self.output_dim = output_dim

    def _min_frames(self) -> int:
        n = 1
        while int(_out_len_all(self.cnn, torch.tensor([n], device="cpu"))[0]) < 1:  # CPU also under a meta device
            n += 1
        return n

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.size(1) < self.min_frames:
            raise ValueError(
                f"conv2d_subsampling x{self.subsampling} needs at least {self.min_frames} frames, "
                f"the batch has {x.size(1)}; drop shorter utterances (data.max_frames / a min length)"
            )
        y, lengths = self.cnn(x.unsqueeze(1), lengths)
        b, c, t, f = y.shape
        y = self.out(y.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return y.masked_fill(~lengths_to_mask(lengths, t)[:, :, None], 0.0), lengths


def _out_len_all(cnn: MaskCNN, lengths: torch.Tensor) -> torch.Tensor:
    for module in cnn.sequential:
        lengths = _out_len(module, lengths)
    return lengths


@register("extractor", "none")
class IdentityExtractor(Extractor):
    """No front end: features go to the encoder as they are (``output_dim = input_dim``).

    ``extractor: null`` in an encoder config means the same.
    """

    def __init__(self, *, input_dim: int) -> None:
        super().__init__()
        self.output_dim = input_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, lengths


def projection(in_dim: int, out_dim: int) -> nn.Module:
    """A linear map between sizes, or nothing when they already agree."""
    return nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim)


def build_extractor(cfg: Mapping[str, Any] | None, input_dim: int, path: str) -> tuple[nn.Module | None, int]:
    """The encoder front end and its output size; ``None`` (``extractor: null``) feeds features as they are."""
    if cfg is None:
        return None, input_dim
    extractor = build("extractor", cfg, path=path, input_dim=input_dim)
    return extractor, int(extractor.output_dim)
