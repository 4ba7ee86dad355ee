"""Fixed-point arithmetic for entropy parameters: encoder and decoder compute bit-identical models.

A learned entropy model predicts a mean and a scale for every symbol from side information and
already-decoded symbols. If the encoder and the decoder computed those with ordinary floats, a
last-bit difference (another batch size, thread count, CPU or GPU) could change which
distribution a symbol is coded with, and the rest of the stream would decode to garbage. So the
networks that produce entropy parameters run *exactly*:

* weights are multiples of ``2**-W_BITS`` (``|w| <= W_MAX``), biases multiples of
  ``2**-(W_BITS + A_BITS)``; activations are rounded to multiples of ``2**-A_BITS`` and clamped
  to ``|a| <= A_MAX`` after every layer;
* every layer is a matrix product in float64 of such values: each product and each partial sum
  is exactly representable (``|sum| < 2**49`` at the widest fan-in allowed, :data:`MAX_FAN_IN`),
  so the result is the same in any summation order, on any device;
* scales become an index into :data:`SCALES`, a table of constants, by comparing integers
  (:func:`scale_index`); the range coder gets the table's float64 values, never a computed ``exp``.

Only ``+ - * /``, ``round`` and comparisons are used after the matrix products; IEEE 754
defines them exactly, so every conforming platform gets the same bits. ``docs/FORMAT.md``
(section "Exact entropy parameters") is the normative statement of these rules.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "W_BITS",
    "A_BITS",
    "A_MAX",
    "W_MAX",
    "MAX_FAN_IN",
    "L_BITS",
    "STEP_BITS",
    "SCALES",
    "SCALE_MIN",
    "THRESHOLDS",
    "q_act",
    "q_weight",
    "q_bias",
    "ExactConv",
    "scale_index",
    "log_units",
]

W_BITS = 12  # weights are multiples of 2**-12
A_BITS = 10  # activations are multiples of 2**-10
A_MAX = 4096.0  # |activation| <= 2**12
W_MAX = 8.0  # |weight| <= 2**3
#: The widest input (channels x kernel area) of an exact layer: 2**12 terms of |w*a| <= 2**15
#: on a 2**-22 grid sum to < 2**27, i.e. 49 significant bits: exact in float64.
MAX_FAN_IN = 4096
L_BITS = 10  # log-scales and log-steps are compared in units of 2**-10
STEP_BITS = 12  # quantisation steps of learned codecs are stored in units of 2**-12

#: The coding scales (standard deviations, in symbol units): 64 values, log-spaced from 0.11
#: to 64, written out so that every platform reads the same float64 constants.
SCALES: tuple[float, ...] = (
    0.11, 0.121697, 0.134637, 0.148953, 0.164791, 0.182314, 0.2017, 0.223147,
    0.246875, 0.273126, 0.302168, 0.334298, 0.369844, 0.409171, 0.452678, 0.500813,
    0.554065, 0.61298, 0.67816, 0.75027, 0.830047, 0.918308, 1.01595, 1.12398,
    1.2435, 1.37572, 1.522, 1.68384, 1.86289, 2.06097, 2.28012, 2.52257,
    2.7908, 3.08755, 3.41586, 3.77908, 4.18091, 4.62548, 5.11732, 5.66145,
    6.26344, 6.92945, 7.66627, 8.48144, 9.38329, 10.381, 11.4849, 12.7061,
    14.0572, 15.5519, 17.2055, 19.035, 21.0591, 23.2983, 25.7757, 28.5165,
    31.5487, 34.9033, 38.6147, 42.7207, 47.2632, 52.2888, 57.8488, 64.0,
)
SCALE_MIN = SCALES[0]
#: ``THRESHOLDS[j]``: the boundary between ``SCALES[j]`` and ``SCALES[j+1]``, as
#: ``round(2**L_BITS * (ln SCALES[j] + ln SCALES[j+1]) / 2)`` (integers, so comparisons are exact).
THRESHOLDS: tuple[int, ...] = (
    -2209, -2105, -2002, -1898, -1795, -1691, -1588, -1484, -1381, -1277, -1174, -1070, -967, -863,
    -760, -656, -553, -449, -346, -242, -139, -36, 68, 171, 275, 378, 482, 585,
    689, 792, 896, 999, 1103, 1206, 1310, 1413, 1517, 1620, 1724, 1827, 1931, 2034,
    2137, 2241, 2344, 2448, 2551, 2655, 2758, 2862, 2965, 3069, 3172, 3276, 3379, 3483,
    3586, 3690, 3793, 3897, 4000, 4103, 4207,
)
_THR = torch.tensor(THRESHOLDS, dtype=torch.int64)
_FORCE_MATMUL = False  # tests set it to compare the two evaluations


def q_act(x: torch.Tensor) -> torch.Tensor:
    """Round to the activation grid and clamp (float64 in, float64 out)."""
    s = float(2**A_BITS)
    return torch.clamp(torch.round(x.double() * s), -A_MAX * s, A_MAX * s) / s


def q_weight(w: torch.Tensor) -> torch.Tensor:
    """Weights on their grid (an identity for weights a base stores, which are already on it)."""
    s = float(2**W_BITS)
    return torch.clamp(torch.round(w.double() * s), -W_MAX * s, W_MAX * s) / s


def q_bias(b: torch.Tensor) -> torch.Tensor:
    s = float(2 ** (W_BITS + A_BITS))
    return torch.round(b.double() * s) / s


class ExactConv(nn.Conv2d):
    """A stride-1, 'same'-padded convolution of an entropy-parameter network.

    Trains as an ordinary ``nn.Conv2d``; :meth:`exact` evaluates it on the fixed-point grids as
    an unfold + float64 matrix product, which gives the same bits on every device and batch size.
    """

    def __init__(self, cin: int, cout: int, k: int):
        if cin * k * k > MAX_FAN_IN:
            raise ValueError(f"an exact layer takes at most {MAX_FAN_IN} inputs per output, got {cin * k * k}")
        super().__init__(cin, cout, k, padding=k // 2)

    def masked_weight(self) -> torch.Tensor:
        """The weights the layer computes with (all of them here; subclasses may hold taps at zero)."""
        return self.weight

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: float64 on the activation grid -> float64 on the activation grid."""
        wq = q_weight(self.masked_weight()).to(x.device)
        bq = q_bias(self.bias).to(x.device)
        if x.device.type == "cpu" and not _FORCE_MATMUL:
            # PyTorch's CPU float64 convolution is a direct / im2col-GEMM sum (no Winograd or FFT
            # transform): with these exactly representable terms it equals the matrix product
            # below bit for bit (tests/test_learned.py checks it), and is several times faster.
            return q_act(F.conv2d(x, wq, bq, padding=self.kernel_size[0] // 2))
        return q_act(self.exact_matmul(x, wq, bq))

    def exact_matmul(self, x: torch.Tensor, wq: torch.Tensor, bq: torch.Tensor) -> torch.Tensor:
        """The reference evaluation: unfold + one float64 matrix product (used on GPUs)."""
        n, _, h, w = x.shape
        k = self.kernel_size[0]
        cols = x.reshape(n, -1, h * w) if k == 1 else F.unfold(x, k, padding=k // 2)  # n, cin*k*k, h*w
        out = torch.matmul(wq.reshape(wq.shape[0], -1), cols) + bq[:, None]
        return out.reshape(n, wq.shape[0], h, w)


def log_units(x: torch.Tensor) -> torch.Tensor:
    """A log value on the activation grid as an integer count of ``2**-L_BITS`` (exact)."""
    return torch.round(x.double() * 2**L_BITS).long()


def scale_index(log_scale: torch.Tensor, log_step: torch.Tensor) -> torch.Tensor:
    """Index into :data:`SCALES` of ``exp(log_scale) / step``, by integer comparison.

    Args:
        log_scale: float64 log standard deviations on the activation grid (any shape ``B x C x ...``).
        log_step: int64 ``round(2**L_BITS * ln step)`` broadcastable to it (per image and channel).

    Returns:
        int64 indices in ``0 .. len(SCALES) - 1``.
    """
    v = log_units(log_scale) - log_step
    return torch.searchsorted(_THR.to(v.device), v.contiguous(), right=True)
