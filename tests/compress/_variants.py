"""The compressed models the Done-when list of issue 6 names, built once per test session
and shared by the torch-side gate tests and the conversion tests (tests/compress/test_convert.py).

Each builder starts from a fresh copy of the trained fp32 model (``_digits._trained``) and
returns the compressed torch model; everything is seeded."""

import copy

from lowbit import compress as lc

from ._digits import _trained

VARIANTS = ("int8", "int4_g32", "int2_qat", "prune90", "structured", "lowrank", "combined")

_built = {}


def _int8(model, train):
    return lc.quantize(model, "int8", progress_bar=False)


def _int4_g32(model, train):
    return lc.quantize(model, "int4_g32_gptq", calib=train[0][:512], progress_bar=False)


def _int2_qat(model, train):
    q = lc.prepare_qat(model, "int2_g32")
    lc.finetune(q, train, epochs=6, lr=1e-3, progress_bar=False)
    return lc.finish_qat(q)


def _prune90(model, train):
    return lc.prune_gradual(model, train, 0.9, epochs=30 if hasattr(model, "fc1") else 12, every=5,
                            lr=3e-3, scope="global", progress_bar=False)


def _structured(model, train):
    s = lc.prune_channels(model, 0.5, train[0][:4])
    lc.distill(model, s, train, T=4.0, alpha=0.7, epochs=15, lr=3e-3, progress_bar=False)
    return s


def _lowrank(model, train):
    f = lc.factorize(model, param_fraction=0.5)
    lc.distill(model, f, train, T=4.0, alpha=0.7, epochs=15, lr=3e-3, progress_bar=False)
    return f


def _combined(model, train):
    c = model
    if hasattr(model, "block"):
        # CNN: a quarter of the channels kept, recovered by distillation (the convolutions stay
        # float32 in the .qbin until lowbit has a quantized Conv: half the channels give 4.2x)
        c = lc.prune_channels(model, 0.75, train[0][:4])
        lc.distill(model, c, train, epochs=10, lr=3e-3, progress_bar=False)
    else:  # MLP: the middle layer as a low-rank pair of rank 16 (an eighth of 128)
        c = lc.factorize(model, rank={"fc2": 16})
    # 75% unstructured sparsity on the gradual schedule, then 4-bit g64 with QAT + distillation
    c = lc.prune_gradual(c, train, 0.75, epochs=15, lr=3e-3, progress_bar=False)
    q = lc.prepare_qat(c, "int4_g64")
    lc.distill(model, q, train, epochs=5, lr=1e-3, progress_bar=False)
    return lc.finish_qat(q)


BUILDERS = {"int8": _int8, "int4_g32": _int4_g32, "int2_qat": _int2_qat, "prune90": _prune90,
            "structured": _structured, "lowrank": _lowrank, "combined": _combined}


def compressed(kind, variant, digits):
    """(fp32 model, compressed model) for ``kind`` in mlp | cnn; fresh copies each call."""
    key = (kind, variant)
    if key not in _built:
        model = _trained(kind, digits)
        train = digits["train"] if kind == "mlp" else digits["train_img"]
        lc.seed_everything(0)
        _built[key] = BUILDERS[variant](model, train)
        _built[key].eval()
    return _trained(kind, digits), copy.deepcopy(_built[key])


def data_of(kind, digits):
    return (digits["train"], digits["test"]) if kind == "mlp" else (digits["train_img"], digits["test_img"])
