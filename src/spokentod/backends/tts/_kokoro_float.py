"""Kokoro-82M int8 ONNX → float32 ONNX, once per machine.

The shipped model is dynamically quantized: every Conv/MatMul input goes through DynamicQuantizeLinear and
an integer ConvInteger/MatMulInteger, and onnxruntime's integer conv is slow on x86 (~63 % of the time).
We dequantize the weights, W = (W_q - w_zp) * w_scale, and replace each chain

    DynamicQuantizeLinear(x) → ConvInteger [→ Add(int bias)] → Cast → Mul(x_scale * w_scale)
    DynamicQuantizeLinear(x) → MatMulInteger → Cast → Mul(x_scale * w_scale)

by a float Conv(x, W, b) / MatMul(x, W) writing the Mul's output; the int bias is traced back to the float
bias it was computed from (floor(b / (x_scale * w_scale))). DynamicQuantizeLSTM becomes a plain LSTM (its
weights are stored transposed). The embedding DequantizeLinear nodes stay (a Gather, cheap). Dead nodes and
initializers are dropped. The result lives in ``cache_dir("models")/kokoro-float32-v<REWRITE_VERSION>-<sha256[:12]>.onnx``,
written to a temp file and renamed under a file lock, like the GGUF conversion in backends/llm/_gguf.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spokentod.atomic import atomic_write
from spokentod.backends.llm._gguf import LOCK_TIMEOUT_S
from spokentod.paths import cache_dir

# Bump when to_float32 changes what it writes: the cached file's name (and the TTS identity) carry it, so a
# stale conversion is never reused.
REWRITE_VERSION = 1


def float32_path(sha256: str) -> Path:
    return cache_dir("models") / f"kokoro-float32-v{REWRITE_VERSION}-{sha256[:12]}.onnx"


def ensure_float32(sha256: str, source: Callable[[], Path]) -> Path:
    """Path of the float32 model, converting `source()` (the int8 .onnx) first if it is not cached yet."""
    target = float32_path(sha256)
    if target.is_file():
        return target
    from filelock import FileLock

    with FileLock(str(target.with_name(target.name + ".lock")), timeout=LOCK_TIMEOUT_S):
        if target.is_file():  # another process finished while we waited
            return target
        import onnx

        model = to_float32(onnx.load(str(source())))
        # a crash never leaves a half-written file under the final name
        atomic_write(target, model.SerializeToString())
    return target


def to_float32(model):
    """Rewrite `model` (onnx.ModelProto, modified in place and returned) to float Conv/MatMul/LSTM."""
    import onnx
    from onnx import helper
    from onnx import numpy_helper as nh

    g = model.graph
    nodes = list(g.node)  # hold the wrappers: nodes are keyed by id() below
    inits = {t.name: t for t in g.initializer}
    prod = {o: n for n in nodes for o in n.output}
    cons: dict[str, list] = defaultdict(list)
    for n in nodes:
        for i in n.input:
            cons[i].append(n)
    arr = lambda name: nh.to_array(inits[name])
    added: dict[str, onnx.TensorProto] = {}

    def only_consumer(name: str, op: str):
        (c,) = cons[name]  # the chain must be linear, or rewriting it would change other consumers
        _need(c.op_type == op, f"{name} feeds {c.op_type}, expected {op}")
        return c

    def other(node, name: str) -> str:
        (o,) = [i for i in node.input if i != name]
        return o

    def weight(w: str, zp: str, scale: str, conv: bool) -> str:
        """Dequantized copy of initializer `w`; shared weights (ALBERT's layers) are converted once."""
        name = f"{w}_float32"
        if name not in added:
            q, z, s = arr(w).astype(np.float32), arr(zp).astype(np.float32), arr(scale).astype(np.float32)
            if conv and s.size > 1:  # per output channel: axis 0 of [O, I/g, k...]
                z, s = (v.reshape((-1,) + (1,) * (q.ndim - 1)) for v in (z, s))
            # MatMul weights are [K, N] with per-column (N) scales: plain broadcasting on the last axis
            added[name] = nh.from_array(((q - z) * s).astype(np.float32), name)
        return name

    def float_bias(name: str, scale: str) -> str:
        """Follow the int bias (Reshape ← Cast ← Floor ← Div(b, x_scale * w_scale)) back to b."""
        n = prod[name]
        while n.op_type in ("Reshape", "Cast", "Floor", "Round"):
            n = prod[n.input[0]]
        _need(n.op_type == "Div" and n.input[1] == scale and n.input[0] in inits, f"bias chain at {n.name}")
        return n.input[0]

    replace: dict[int, list] = {}  # id(node) → the float nodes that take its place
    dead: set[int] = set()
    for n in nodes:
        if n.op_type in ("ConvInteger", "MatMulInteger"):
            conv = n.op_type == "ConvInteger"
            x_q, w_q, x_zp, w_zp = n.input
            dql = prod[x_q]
            _need(dql.op_type == "DynamicQuantizeLinear" and x_zp == dql.output[2], f"input of {n.name}")
            add = cons[n.output[0]][0] if conv and cons[n.output[0]][0].op_type == "Add" else None
            if add is not None:  # ConvInteger's int bias
                only_consumer(n.output[0], "Add")
                dead.add(id(add))
            nxt = only_consumer((add or n).output[0], "Cast")
            _need(helper.get_attribute_value(nxt.attribute[0]) == onnx.TensorProto.FLOAT, f"{nxt.name} to")
            mul = only_consumer(nxt.output[0], "Mul")
            scale = other(mul, nxt.output[0])  # x_scale * w_scale; w_scale is the Mul's other input
            sm = prod[scale]
            _need(sm.op_type == "Mul" and dql.output[1] in sm.input, f"scale of {n.name}")
            w_scale = other(sm, dql.output[1])
            bias = [float_bias(other(add, n.output[0]), scale)] if add is not None else []
            inputs = [dql.input[0], weight(w_q, w_zp, w_scale, conv), *bias]
            name = n.name.replace("_quant", "") + "_f32"
            if not conv:
                replace[id(mul)] = [helper.make_node("MatMul", inputs, list(mul.output), name=name)]
            elif len(inits[w_q].dims) == 3:
                replace[id(mul)] = _conv1d_as_2d(n, inputs, mul.output[0], name, added)
            else:
                replace[id(mul)] = [helper.make_node("Conv", inputs, list(mul.output), name=name)]
                replace[id(mul)][0].attribute.extend(n.attribute)  # pads, strides, dilations, group, kernel
            dead |= {id(n), id(nxt)}
        elif n.op_type == "DynamicQuantizeLSTM":
            x, w, r, b, seq, h0, c0, p, ws, wz, rs, rz = (list(n.input) + [""] * 12)[:12]
            mats = []
            for q, s, z in ((w, ws, wz), (r, rs, rz)):
                # [D, in, 4H] with per-direction (or per-direction-and-gate) scale → ONNX LSTM's [D, 4H, in]
                d = arr(q).shape[0]
                deq = (arr(q).astype(np.float32) - arr(z).reshape(d, 1, -1)) * arr(s).reshape(d, 1, -1)
                name = f"{q}_float32"
                added[name] = nh.from_array(np.ascontiguousarray(deq.transpose(0, 2, 1), np.float32), name)
                mats.append(name)
            lstm = helper.make_node(
                "LSTM", [x, *mats, b, seq, h0, c0, p], list(n.output), name=n.name + "_f32"
            )
            lstm.attribute.extend(n.attribute)  # direction, hidden_size, input_forget
            while lstm.input and not lstm.input[-1]:
                lstm.input.pop()  # trailing optional inputs
            replace[id(n)] = [lstm]

    nodes = [r for n in nodes if id(n) not in dead for r in replace.get(id(n), [n])]
    nodes = _live(nodes, {o.name for o in g.output})
    g.initializer.extend(added.values())
    used = {i for n in nodes for i in n.input}
    keep_inits = [t for t in g.initializer if t.name in used]
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    names = used | {o for n in nodes for o in n.output}
    keep_vi = [v for v in g.value_info if v.name in names]
    del g.value_info[:]
    g.value_info.extend(keep_vi)
    onnx.checker.check_model(model)
    return model


def _need(ok: bool, what: str) -> None:
    """The rewrite relies on the exact chains the int8 exporter wrote; anything else must stop it."""
    if not ok:
        raise ValueError(f"unexpected Kokoro int8 graph: {what}")


def _conv1d_as_2d(n, inputs: list[str], out: str, name: str, added: dict) -> list:
    """Unsqueeze → Conv2d (1×k kernel) → Squeeze: onnxruntime runs 2-D float convs through its NCHWc
    kernels, 1-D ones through im2col + GEMM; the vocoder's [128, 23881]-sized convs were ~15 % faster so."""
    from onnx import helper
    from onnx import numpy_helper as nh

    at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError(f"{n.name}: auto_pad is not handled")
    x, w, *bias = inputs
    w2 = f"{w}_2d"
    if w2 not in added:
        added[w2] = nh.from_array(
            nh.to_array(added[w])[:, :, None, :], w2
        )  # the 3-D one is dropped as unused
    if "kokoro_axis2" not in added:
        added["kokoro_axis2"] = nh.from_array(np.array([2], dtype=np.int64), "kokoro_axis2")
    pads = at.get("pads", [0, 0])
    return [
        helper.make_node("Unsqueeze", [x, "kokoro_axis2"], [f"{out}_4d_in"], name=f"{name}_unsqueeze"),
        helper.make_node(
            "Conv",
            [f"{out}_4d_in", w2, *bias],
            [f"{out}_4d"],
            name=name,
            kernel_shape=[1, *at["kernel_shape"]],
            strides=[1, *at.get("strides", [1])],
            dilations=[1, *at.get("dilations", [1])],
            pads=[0, pads[0], 0, pads[1]],
            group=at.get("group", 1),
        ),
        helper.make_node("Squeeze", [f"{out}_4d", "kokoro_axis2"], [out], name=f"{name}_squeeze"),
    ]


def _live(nodes: list, outputs: set[str]) -> list:
    """Nodes that some graph output depends on (the graph has no subgraphs), in their original order."""
    need, keep = set(outputs), []
    for n in reversed(nodes):
        if any(o in need for o in n.output):
            keep.append(n)
            need.update(n.input)
    return keep[::-1]


def spectral_similarity(a: np.ndarray, b: np.ndarray, sr: int = 24000) -> tuple[float, float]:
    """(correlation, mean |difference| in dB) of two renderings' log-mel spectrograms (80 dB floor) after
    DTW alignment: the two graphs predict slightly different phoneme durations, so a frame-by-frame
    comparison would mostly measure the shift. The dB distance separates better than the correlation (all
    speech shares a spectral shape): float32 vs int8 2.1-2.6 dB, a rewrite without the conv biases 4.5-5.2,
    another voice 5.8-6.1, MatMul scales on the wrong axis 8.2-8.7."""
    import librosa

    def db(x: np.ndarray) -> np.ndarray:
        m = 10 * np.log10(librosa.feature.melspectrogram(y=x, sr=sr, n_mels=80) + 1e-10)
        return np.maximum(m, m.max() - 80)

    da, dbb = db(a), db(b)
    _, path = librosa.sequence.dtw(da, dbb, metric="euclidean")
    fa, fb = da[:, path[:, 0]], dbb[:, path[:, 1]]
    return float(np.corrcoef(fa.ravel(), fb.ravel())[0, 1]), float(np.mean(np.abs(fa - fb)))
