"""The torch calls a replay may make, and the strings it may pass them: explicit tables, built in code.

A trace file may come from a stranger, so the callable behind an op's ``target`` is never
looked up from the file's string: :data:`REPLAYABLE` maps each target gradtrace knows how
to replay (``Tensor.add``, ``torch.matmul``, ``torch.nn.functional.mse_loss``...) to the
function itself, and a target not in it is not replayed. The table is bound once, at
import, from names written below (a name this torch lacks is left out), to differentiable
math, shape and loss functions that read only their arguments: nothing that touches files,
imports, serialisation, raw memory (``as_strided``, ``set_``) or draws random numbers
(dropout is in, for the replay's own check lets it through only at ``p=0`` or in eval mode).

Strings are arguments like any other to a torch function, so they are checked too: a string
may stand only where :func:`string_kind` says one does (``reduction=``, an einsum equation,
``padding='same'``...), and only with a value :func:`accepts` allows.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["REPLAYABLE", "BOOLEAN_DISPATCH", "BOOLEAN_DISPATCH_TARGET", "replayable",
           "string_kind", "accepts", "ENUMS"]


def _bind(prefix: str, owner, names: str) -> dict[str, Callable]:
    """``prefix + name -> owner.name`` for each of ``names`` (this module's own literals,
    never a file's) that this torch has."""
    out = {}
    for name in names.split():
        fn = getattr(owner, name, None)
        if fn is not None and callable(fn):
            out[prefix + name] = fn
    return out


# -- names, by what they do (shared by Tensor methods and torch functions where both exist) --

_ELEMENTWISE = """
    add sub subtract rsub mul multiply div divide true_divide remainder fmod pow float_power
    neg negative positive abs absolute sign sgn reciprocal square sqrt rsqrt exp exp2 expm1 log log2
    log10 log1p sin cos tan asin arcsin acos arccos atan arctan atan2 arctan2 sinh cosh tanh
    asinh arcsinh acosh arccosh atanh arctanh sigmoid logit relu erf erfc erfinv lgamma digamma
    polygamma mvlgamma i0 sinc xlogy hypot lerp addcmul addcdiv maximum minimum fmax fmin
    clamp clip clamp_min clamp_max floor ceil round trunc frac nan_to_num copysign heaviside
    logaddexp logaddexp2 where masked_fill masked_scatter masked_select
    eq ne lt le gt ge greater greater_equal less less_equal not_equal isnan isinf isfinite
    logical_and logical_or logical_not logical_xor
"""
_REDUCTIONS = """
    sum mean nansum nanmean prod std var std_mean var_mean norm amax amin aminmax max min
    median nanmedian mode kthvalue topk sort argsort argmax argmin logsumexp logcumsumexp
    cumsum cumprod cummax cummin softmax log_softmax renorm dist diff trace count_nonzero
    all any quantile nanquantile
"""
_LINEAR_ALGEBRA = """
    matmul mm bmm mv dot vdot inner outer ger addmm addmv addbmm baddbmm addr kron cross
    det logdet slogdet inverse pinverse matrix_power matrix_exp cholesky_solve cholesky_inverse
    triangular_solve tril triu diag diagonal diag_embed diagflat
"""
_SHAPES = """
    t adjoint transpose swapaxes swapdims permute movedim moveaxis reshape reshape_as view
    view_as flatten unflatten ravel squeeze unsqueeze expand expand_as broadcast_to repeat
    repeat_interleave tile flip fliplr flipud roll rot90 narrow narrow_copy select index_select
    gather take take_along_dim scatter scatter_add scatter_reduce index_add index_copy
    index_fill index_put chunk split split_with_sizes tensor_split unbind hsplit vsplit dsplit
    contiguous clone detach type_as unfold
"""
# Tensor-only methods: conversions and the Python operators.
_TENSOR_ONLY = """
    to type new_zeros new_ones new_full new_tensor zero_ fill_ copy_
    __getitem__ __setitem__ __add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__
    __rmul__ __imul__ __truediv__ __rtruediv__ __itruediv__ __div__ __rdiv__ __idiv__
    __floordiv__ __rfloordiv__ __mod__ __rmod__ __pow__ __rpow__ __ipow__ __matmul__
    __rmatmul__ __neg__ __pos__ __abs__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__
    __and__ __or__ __xor__ __invert__
"""
# In-place versions that run inside a replayed step (`y += 1`, a custom Function's body).
_INPLACE = """
    add_ sub_ mul_ div_ true_divide_ remainder_ fmod_ pow_ neg_ abs_ sign_ reciprocal_
    square_ sqrt_ rsqrt_ exp_ expm1_ log_ log1p_ log2_ log10_ sin_ cos_ tan_ tanh_ sigmoid_
    relu_ erf_ clamp_ clip_ clamp_min_ clamp_max_ floor_ ceil_ round_ trunc_ frac_
    nan_to_num_ lerp_ addcmul_ addcdiv_ masked_fill_ masked_scatter_ index_add_ index_copy_
    index_fill_ index_put_ scatter_ scatter_add_ scatter_reduce_ tril_ triu_ t_ transpose_
    squeeze_ unsqueeze_ fill_diagonal_ copysign_ hypot_ logit_ xlogy_
"""
# torch.* only: joining, building, nn kernels the functional API calls straight through.
_TORCH_ONLY = """
    cat concat concatenate stack hstack vstack dstack column_stack row_stack
    zeros ones full arange linspace logspace eye zeros_like ones_like full_like tensor
    as_tensor scalar_tensor
    conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d conv_tbc
    avg_pool1d max_pool1d max_pool2d max_pool3d adaptive_avg_pool1d adaptive_max_pool1d
    batch_norm layer_norm group_norm instance_norm rms_norm embedding embedding_bag
    dropout feature_dropout alpha_dropout feature_alpha_dropout
    selu celu prelu hardshrink threshold cosine_similarity pairwise_distance pdist
    pixel_shuffle pixel_unshuffle channel_shuffle bilinear trapezoid trapz
    cumulative_trapezoid cov corrcoef bucketize searchsorted
"""
# torch.functional: Python-level torch.* functions; the recorder names them by this module.
_TORCH_FUNCTIONAL = """
    einsum split norm meshgrid tensordot cdist broadcast_tensors atleast_1d atleast_2d
    atleast_3d block_diag cartesian_prod chain_matmul
"""
# torch._C._nn: kernels torch.nn.functional hands its arguments to unchanged.
_C_NN = """
    linear gelu silu mish softplus softshrink hardsigmoid hardswish hardtanh elu leaky_relu
    log_sigmoid glu avg_pool2d avg_pool3d adaptive_avg_pool2d adaptive_avg_pool3d
    adaptive_max_pool2d adaptive_max_pool3d mse_loss l1_loss smooth_l1_loss huber_loss
    nll_loss nll_loss_nd nll_loss2d cross_entropy_loss binary_cross_entropy soft_margin_loss
    multi_margin_loss multilabel_margin_loss one_hot pad im2col col2im
    reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d replication_pad2d
    replication_pad3d upsample_nearest1d upsample_nearest2d upsample_nearest3d
    upsample_linear1d upsample_bilinear2d upsample_bicubic2d upsample_trilinear3d
"""
# torch.nn.functional's own Python functions (losses, activations, normalisation).
_FUNCTIONAL = """
    relu relu6 elu selu celu silu mish gelu leaky_relu hardtanh hardswish hardsigmoid
    logsigmoid softplus softsign softshrink hardshrink tanhshrink threshold _threshold glu
    sigmoid tanh
    softmax softmin log_softmax normalize linear bilinear
    layer_norm group_norm batch_norm instance_norm local_response_norm rms_norm
    embedding embedding_bag pad interpolate upsample upsample_nearest upsample_bilinear
    unfold fold pixel_shuffle pixel_unshuffle cosine_similarity pairwise_distance pdist
    conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d
    avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
    lp_pool1d lp_pool2d lp_pool3d affine_grid grid_sample one_hot
    mse_loss l1_loss smooth_l1_loss huber_loss cross_entropy nll_loss binary_cross_entropy
    binary_cross_entropy_with_logits kl_div poisson_nll_loss gaussian_nll_loss
    soft_margin_loss margin_ranking_loss hinge_embedding_loss cosine_embedding_loss
    multilabel_soft_margin_loss multilabel_margin_loss multi_margin_loss triplet_margin_loss
    triplet_margin_with_distance_loss
    dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout
"""
_LINALG = """
    norm vector_norm matrix_norm det slogdet inv inv_ex pinv solve solve_ex solve_triangular
    lstsq cholesky cholesky_ex qr eigh eigvalsh svd svdvals matrix_power matrix_exp
    matrix_rank cross multi_dot vecdot householder_product tensorinv tensorsolve lu
    lu_factor lu_factor_ex lu_solve ldl_factor ldl_solve cond diagonal vander
"""
_SPECIAL = """
    expit logit erf erfc erfcx erfinv gammaln digamma psi polygamma multigammaln i0 i0e i1 i1e
    ndtr ndtri log_ndtr sinc entr xlogy xlog1py softmax log_softmax logsumexp round exp2
    expm1 log1p zeta
"""
_FFT = """
    fft ifft fft2 ifft2 fftn ifftn rfft irfft rfft2 irfft2 rfftn irfftn hfft ihfft fftshift
    ifftshift
"""

#: target -> the function a replay calls for it. Targets are what the recorder writes:
#: ``Tensor.<method>``, ``torch.<function>``, ``torch._C._nn.<kernel>``, ``torch.linalg.*``,
#: ``torch.special.*``, ``torch.fft.*`` and ``<module>.<qualname>`` of Python functions.
REPLAYABLE: dict[str, Callable] = {}
REPLAYABLE.update(_bind("torch.", torch, _ELEMENTWISE + _REDUCTIONS + _LINEAR_ALGEBRA + _SHAPES
                        + _TORCH_ONLY))
REPLAYABLE.update(_bind("torch.functional.", torch.functional, _TORCH_FUNCTIONAL))
REPLAYABLE.update(_bind("Tensor.", torch.Tensor, _ELEMENTWISE + _REDUCTIONS + _LINEAR_ALGEBRA
                        + _SHAPES + _TENSOR_ONLY + _INPLACE))
REPLAYABLE.update(_bind("torch._C._nn.", torch._C._nn, _C_NN))
REPLAYABLE.update(_bind("torch.nn.functional.", F, _FUNCTIONAL))
REPLAYABLE.update(_bind("torch.linalg.", torch.linalg, _LINALG))
REPLAYABLE.update(_bind("torch.special.", torch.special, _SPECIAL))
REPLAYABLE.update(_bind("torch.fft.", torch.fft, _FFT))
# Properties that build the graph (`X @ w.T`): the recorder names their getters.
REPLAYABLE.update({
    "Tensor.T.__get__": torch.Tensor.T.__get__,  # type: ignore[attr-defined]
    "Tensor.mT.__get__": torch.Tensor.mT.__get__,  # type: ignore[attr-defined]
    "Tensor.H.__get__": torch.Tensor.H.__get__,  # type: ignore[attr-defined]
    "Tensor.mH.__get__": torch.Tensor.mH.__get__,  # type: ignore[attr-defined]
})
# Casts to a float type replay as a cast to float64, the replay's precision.
REPLAYABLE.update(dict.fromkeys(("Tensor.float", "Tensor.half", "Tensor.bfloat16", "Tensor.double"),
                                torch.Tensor.double))

#: The functions torch.nn.functional builds with ``boolean_dispatch`` (on
#: ``return_indices``) all have one target, so for that target the op's name picks one.
BOOLEAN_DISPATCH_TARGET = "torch.nn.functional.boolean_dispatch.<locals>.fn"
BOOLEAN_DISPATCH: dict[str, Callable] = _bind("", F, """
    max_pool1d max_pool2d max_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
""")


def replayable(target, name) -> Callable | None:
    """The function a replay calls for an op with this target (and name), or None."""
    if not isinstance(target, str):
        return None
    if target == BOOLEAN_DISPATCH_TARGET:
        return BOOLEAN_DISPATCH.get(name) if isinstance(name, str) else None
    return REPLAYABLE.get(target)


# -- strings ----------------------------------------------------------------------------------

#: Keyword arguments that take one of a few strings, and those strings.
ENUMS: dict[str, frozenset[str]] = {k: frozenset(v.split()) for k, v in {
    "reduction": "mean sum none batchmean",
    "approximate": "none tanh",
    "padding": "same valid",
    "rounding_mode": "trunc floor",
    "mode": "constant reflect replicate circular nearest nearest-exact linear bilinear "
            "bicubic trilinear area reduced complete r sum mean max",
    "padding_mode": "zeros border reflection reflect replicate circular",
    "p": "fro nuc",
    "ord": "fro nuc",
    "norm": "forward backward ortho",
    "indexing": "ij xy",
    "side": "left right",
    "UPLO": "L U",
    "interpolation": "linear lower higher midpoint nearest",
    "reduce": "sum prod mean amax amin add multiply",
}.items()}
_EQUATION = re.compile(r"[A-Za-z.,\-> ]{1,200}")
_DEVICE = re.compile(r"(cpu|cuda|mps|xpu|meta)(:\d{1,3})?")

# Positional arguments that take a string, per target: argument index -> its kind.
_FFT_NORM = {3: "norm"}
_POSITIONS: dict[str, dict[int, str]] = {
    "torch.functional.einsum": {0: "equation"},
    "torch.conv1d": {4: "padding"},
    "torch.conv2d": {4: "padding"},
    "torch.conv3d": {4: "padding"},
    "torch.linalg.norm": {1: "ord"},
    "torch.linalg.matrix_norm": {1: "ord"},
    "torch.linalg.cond": {1: "ord"},
    "Tensor.norm": {1: "p"},
    "torch.functional.norm": {1: "p"},
    "torch.nn.functional.pad": {2: "mode"},
    "torch._C._nn.pad": {2: "mode"},
    "torch.nn.functional.interpolate": {3: "mode"},
    "Tensor.to": {1: "device"},
    **{f"torch.fft.{n}": _FFT_NORM for n in _FFT.split() if not n.endswith("shift")},
}


def string_kind(target: str, slot: int | str) -> str | None:
    """What a string argument at ``slot`` (a positional index or a keyword) of ``target``
    stands for (``"reduction"``, ``"equation"``, ``"device"``...), or None: no string there."""
    if isinstance(slot, str):
        if slot == "equation" and target == "torch.functional.einsum":
            return "equation"
        return slot if slot in ENUMS or slot == "device" else None
    return _POSITIONS.get(target, {}).get(slot)


def accepts(kind: str, value: str) -> bool:
    """Whether ``value`` is one of the strings an argument of this kind takes."""
    if kind == "equation":
        return _EQUATION.fullmatch(value) is not None
    if kind == "device":
        return _DEVICE.fullmatch(value) is not None
    return value in ENUMS.get(kind, ())
