"""Type stubs for ``lowbit._core``, the native module (csrc/bindings/module.cc).

Everything here is an implementation detail behind the public API in
``lowbit/__init__.py``; the test and bench hooks take an ISA name so every
kernel path can be exercised on one machine.
"""

from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

class MemoryLimitError(ValueError):
    """A run would allocate more than ``memory_limit()`` bytes."""

class Engine:
    """The C++ executor for one graph: values and nodes as plain dicts (see
    ``lowbit.runtime.build_engine``), graph inputs and outputs as value ids."""

    def __init__(self, values: list[dict[str, Any]], nodes: list[dict[str, Any]], inputs: Sequence[int],
                 outputs: Sequence[int]) -> None: ...
    def run(self, xs: list[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]: ...
    def profile(self, xs: list[npt.NDArray[Any]], repeat: int
                ) -> tuple[list[npt.NDArray[Any]], list[list[float]]]:
        """Runs ``repeat`` times; the outputs of the last run and per-node seconds of each run."""
    def node_kernels(self) -> list[str]: ...
    def arena_bytes(self, shapes: Sequence[Sequence[int]]) -> int: ...

def cpu_features() -> list[str]: ...
def cpu_vendor() -> str: ...
def avx512_emulated() -> bool:
    """True only in a development build with -DLOWBIT_EMULATE_AVX512=ON (AVX-512 through SIMDe)."""
def selected_isa() -> str: ...
def supported_isas() -> list[str]:
    """ISAs this CPU and OS can run, best first."""
def kernel_names(isa: str = "") -> dict[str, str]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def crc32c(data: Any, crc: int = 0) -> int: ...
def crc32c_isa(isa: str, data: Any, crc: int = 0) -> int: ...
def pack_f32_n16(B: npt.ArrayLike) -> npt.NDArray[np.float32]: ...
def bf16_gemm(isa: str, A: npt.ArrayLike, B: npt.ArrayLike, trans_b: bool = False,
              row_scale: npt.ArrayLike | None = None) -> npt.NDArray[np.float32]:
    """A named ISA's bf16 GEMM: C = A . B ([K, N], or B [N, K] transposed with trans_b), packed by its
    packings; each row m times row_scale[m] when given."""
def bf16_softmax(isa: str, x: npt.ArrayLike, scale_op: int = 0, scale: float = 1.0,
                 add: npt.ArrayLike | None = None) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.float32]]:
    """A named ISA's bf16 attention softmax of the rows of x [rows, n]: the bf16 codes of exp(pre(x) - max)
    [rows, n rounded up to 32], and 1 / their fp32 sums."""
def bf16_pack(isa: str, x: npt.ArrayLike, kind: str) -> npt.NDArray[np.uint16]:
    """A named ISA's bf16 packing of x: "a" (bf16-k32), "b" or "bt" (bf16-n16k2)."""
def f32_gemm(isa: str, A: npt.NDArray[np.float32], Bp: npt.NDArray[np.float32], bias: npt.ArrayLike | None,
             act: int, N: int, C: npt.NDArray[np.float32], m0: int, m1: int, n0: int, n1: int,
             res: npt.ArrayLike | None = None) -> None:
    """A named ISA's fp32 GEMM over C[m0:m1, n0:n1]; `res` [M, N] is added after the bias, before the activation."""
def f32_gemm_implicit(isa: str, A: npt.NDArray[np.float32], lda: int, kseg: int, seg_stride: int, mrow: int,
                      row_stride: int, M: int, K: int, Bp: npt.NDArray[np.float32], N: int, C: npt.NDArray[np.float32],
                      m0: int, m1: int) -> None:
    """The fp32 GEMM over an implicit (im2col-free) A read from a flat buffer (f32_gemm.h)."""
def f32_row(isa: str, fn: str, x: npt.ArrayLike, inplace: bool = False) -> npt.NDArray[np.float32]:
    """A named ISA's f32-vmath row function (``softmax`` or ``gelu``) over a 1-D array."""
def f32_layernorm(isa: str, x: npt.ArrayLike, skip: npt.ArrayLike | None, gamma: npt.ArrayLike,
                  beta: npt.ArrayLike | None, eps: float, inplace: bool = False
                  ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """A named ISA's layer normalization of each row of ``x`` (plus ``skip``): (y, mean, istd)."""
def f32_softmax_pre(isa: str, x: npt.ArrayLike, scale_op: int, scale: float, add: npt.ArrayLike | None = None,
                    inplace: bool = False) -> npt.NDArray[np.float32]:
    """A named ISA's softmax of ``x`` scaled (``scale_op`` 1: times, 2: divided by ``scale``)
    and then plus ``add`` (a row, or one value broadcast), as the Attention op calls it."""
def f32_dwconv(isa: str, x: npt.ArrayLike, w: npt.ArrayLike, bias: npt.ArrayLike | None, y: npt.NDArray[np.float32],
               stride: Sequence[int], dilation: Sequence[int], pad_tl: Sequence[int], r0: int, r1: int) -> None:
    """A named ISA's fp32 depthwise kernel over output rows [r0, r1) of y (NHWC)."""
def f32_maxpool(isa: str, x: npt.ArrayLike, y: npt.NDArray[np.float32], kernel: Sequence[int], stride: Sequence[int],
                dilation: Sequence[int], pad_tl: Sequence[int], r0: int, r1: int) -> None:
    """A named ISA's fp32 max-pool kernel over output rows [r0, r1) of y (NHWC)."""
def f32_wino_input(isa: str, d: npt.ArrayLike, v: npt.NDArray[np.float32]) -> None:
    """A named ISA's Winograd F(2x2, 3x3) input transform of one tile: d [16, C] pixels -> v [16, C]."""
def f32_wino_output(isa: str, m: npt.ArrayLike, y: npt.NDArray[np.float32], bias: npt.ArrayLike | None = None,
                    res: npt.ArrayLike | None = None, relu: bool = False, outside: int = 0) -> None:
    """A named ISA's Winograd F(2x2, 3x3) output transform of one tile: m [16, C] -> y [4, C]
    (+ bias, + res, ReLU); rows whose bit is set in `outside` are not written."""
def pack_qs8(Wq: npt.NDArray[np.int8], scales: npt.ArrayLike) -> npt.NDArray[np.uint8]: ...
def pack_q4(codes: npt.NDArray[np.uint8], scales_f16: npt.NDArray[np.uint16], zeros: npt.ArrayLike | None,
            table: npt.ArrayLike | None, kind: str, group: int) -> npt.NDArray[np.uint8]: ...
def qdense(isa: str, x: npt.ArrayLike, w: npt.NDArray[np.uint8], encoding: str, K: int, N: int,
           bias: npt.ArrayLike | None = None, act: int = 0, threaded: bool = False, outliers: int = 0,
           x_grid: tuple[float, int] | None = None, y_grid: tuple[float, int] | None = None,
           lattice: bool | None = None) -> npt.NDArray[np.float32]: ...
def q4_lattice(w: npt.NDArray[np.uint8], encoding: str, K: int, N: int
               ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int16], int] | None: ...
def qs8_quant(isa: str, X: npt.ArrayLike, Kp: int, group: int, bias128: bool
              ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32], npt.NDArray[np.int32]]: ...
def qs8_quant_split(isa: str, X: npt.ArrayLike, Kp: int, group: int, bias128: bool, outliers: int
                    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32], npt.NDArray[np.int32],
                               npt.NDArray[np.int32], npt.NDArray[np.float32]]: ...
def qw_axpy(isa: str, W: npt.NDArray[np.uint8], encoding: str, K: int, N: int, k: int, v: float, n0: int, n1: int,
            y: npt.NDArray[np.float32]) -> None: ...
def qs8_requant(isa: str, y: npt.ArrayLike, mult: npt.ArrayLike, out_zp: int, lo: int, hi: int,
                residual: npt.ArrayLike | None = None, r_zp: int = 0, r_mult: float = 0.0, two_step: bool = False,
                mid_zp: int = 0, mid_mult: float = 1.0) -> npt.NDArray[np.int8]:
    """Requantizes a float block [M, N] to int8 codes (kernels/qs8-requant) with a named ISA."""
def qs8_dwconv(isa: str, x: npt.ArrayLike, w: npt.ArrayLike, bias: npt.ArrayLike | None, mult: npt.ArrayLike,
               strides: Sequence[int], dilations: Sequence[int], pads: Sequence[int], OH: int, OW: int, x_zp: int,
               out_zp: int, lo: int, hi: int) -> npt.NDArray[np.int8]:
    """int8 depthwise convolution, NHWC (kernels/qs8-dwconv), with a named ISA."""
def pack_sell_f32(w: npt.ArrayLike, bk: int = 1) -> npt.NDArray[np.uint8]:
    """W [K, N] -> an "f32-csr-s8" blob (SELL-8, docs/format.md)."""
def pack_sell_s8(wq: npt.NDArray[np.int8], scales: npt.ArrayLike, bk: int = 1) -> npt.NDArray[np.uint8]:
    """int8 W [K, N] + per-column scales -> "qs8-csr-k16" (bk = 1) or "qs8-bsr1x4-s8" (bk = 4)."""
def sell_info(w: npt.NDArray[np.uint8], encoding: str, K: int, N: int) -> dict[str, int]:
    """A validated sparse blob's counts: K, N, steps (cells for K16), nnz, slices, block."""
def spdense(isa: str, x: npt.ArrayLike, w: npt.NDArray[np.uint8], encoding: str, K: int, N: int,
            bias: npt.ArrayLike | None = None, act: int = 0, threaded: bool = False, path: str = "auto") -> npt.NDArray[np.float32]: ...
def memread_sum(b: Any, isa: str = 'scalar') -> int: ...
def qs8_dotpeak(isa: str, rounds: int, a: int = 1, b: int = 1) -> int: ...
def known_ops() -> list[str]: ...
def _set_conv_implicit_gemm(on: bool) -> None:
    """Testing only: False makes every Conv gather patches (im2col); both paths give the same bits."""
def _set_conv_winograd(on: bool) -> None:
    """Testing only: False runs 3x3 stride-1 convs through the GEMM paths instead of Winograd."""
def memory_limit() -> int: ...
def set_memory_limit(nbytes: int) -> None: ...
