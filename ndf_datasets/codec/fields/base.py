"""The contract every field architecture implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch

__all__ = ["TensorSpec", "FieldArch"]


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a field.

    Attributes:
        name: key in the parameter dict.
        shape: shape for ONE image (no batch dimension).
        role: ``"latent"`` (per image, always in the record), ``"weight"`` (network
            weights: in the file for a standalone field, in the shared base otherwise) or
            ``"encoder"`` (an amortised encoder stored in a shared base; never used to decode).
        step: quantisation step the base stores this tensor with (``None``: the base's
            default weight step). Integer tables use ``1.0``.
    """

    name: str
    shape: tuple[int, ...]
    role: str
    step: float | None = None

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class FieldArch:
    """A neural-field architecture: geometry + config in, tensors listed, batches rendered.

    Subclasses set ``arch_id``/``name`` through :func:`ndf_datasets.codec.fields.register_arch` and
    implement :meth:`parse_config`, :meth:`tensor_specs`, :meth:`render` and
    :meth:`macs_per_pixel`.

    Args:
        config: the architecture's integer parameters, as stored in the file.
        height, width: the original image size (latent shapes may depend on it).
        channels: output channels (1, 3 or 4).

    Raises:
        ValueError: the config is not valid for this architecture.
    """

    arch_id: ClassVar[int] = 0
    name: ClassVar[str] = ""
    #: Whether a standalone (kind 1) file of this architecture can be rendered, i.e. whether
    #: :meth:`render` accepts per-image weights. Readers refuse such files when it is False.
    standalone: ClassVar[bool] = True

    def __init__(self, config: tuple[int, ...], height: int, width: int, channels: int):
        self.config = tuple(int(v) for v in config)
        self.height = int(height)
        self.width = int(width)
        self.channels = int(channels)
        self.parse_config(self.config)

    def parse_config(self, config: tuple[int, ...]) -> None:
        raise NotImplementedError

    def tensor_specs(self) -> list[TensorSpec]:
        raise NotImplementedError

    def render(self, params: Mapping[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        """Render ``B`` images at ``height x width`` in one forward pass.

        Latent tensors carry a leading batch dimension ``B``. Weight tensors either carry it
        too (one network per image) or not (one network shared by the batch).

        Returns:
            ``B x C x height x width`` float tensor (not clamped).
        """
        raise NotImplementedError

    def macs_per_pixel(self) -> int:
        """Multiply-accumulates spent per output pixel (the decoder's cost)."""
        raise NotImplementedError

    def peak_values(self, height: int, width: int) -> int:
        """Elements of the largest intermediate tensor of :meth:`render` for ONE image at
        ``height x width`` (an estimate; readers check it before rendering, so a hostile
        header can not make them allocate without bound).

        The default: one activation of the widest weight matrix per output pixel.
        """
        dims = [self.channels] + [d for s in self.tensor_specs() if s.role == "weight" for d in s.shape[:2]]
        return height * width * max(dims)

    def latent_specs(self) -> list[TensorSpec]:
        """The per-image tensors, in spec order (computed once per instance)."""
        if "_latent_specs" not in self.__dict__:
            self._latent_specs = [s for s in self.tensor_specs() if s.role == "latent"]
        return self._latent_specs

    def weight_specs(self) -> list[TensorSpec]:
        """Every non-latent tensor (decoder weights, then any encoder), in spec order."""
        if "_weight_specs" not in self.__dict__:
            self._weight_specs = [s for s in self.tensor_specs() if s.role != "latent"]
        return self._weight_specs

    def analysis(self, params: Mapping[str, torch.Tensor], images: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Predict latents for ``B x C x H x W`` images in one pass, if the architecture has an
        amortised encoder (``None`` otherwise: latents are then fitted from zero)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={self.config}, size={self.height}x{self.width}, channels={self.channels})"
