"""Identity removal and dead-code elimination."""

from __future__ import annotations

from ..ir import Graph


def eliminate_identity(graph: Graph) -> Graph:
    """Removes Identity nodes by renaming their output to their input wherever it
    is read. An Identity whose output is a graph output is kept (the name is
    part of the model's interface)."""
    outputs = graph.output_names()
    rename: dict[str, str] = {}
    kept = []
    for n in graph.nodes:
        n.inputs = [rename.get(i, i) for i in n.inputs]
        if n.op == "Identity" and n.outputs[0] not in outputs:
            rename[n.outputs[0]] = n.inputs[0]
            continue
        kept.append(n)
    graph.nodes = kept
    return graph


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drops nodes none of whose outputs reach a graph output, then constants
    nothing reads."""
    needed = graph.output_names()
    kept = []
    for n in reversed(graph.nodes):
        if any(o in needed for o in n.outputs):
            kept.append(n)
            needed.update(i for i in n.inputs if i)
    graph.nodes = kept[::-1]
    graph.tensors = {k: t for k, t in graph.tensors.items() if k in needed}
    return graph
