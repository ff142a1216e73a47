"""gate/ has no import circle: every import statement counts (at module level, inside a function, under
TYPE_CHECKING), as grimp counts them. Unit test: reads the source, imports nothing of the gate."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

GATE = Path(__file__).resolve().parent.parent / "gate"


def _module(path: Path) -> str:
    return "gate" if path.name == "__init__.py" else f"gate.{path.stem}"


def imports_inside_gate() -> dict[str, set[str]]:
    modules = {_module(p) for p in GATE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in GATE.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "gate":  # `from gate import x`: the submodule x, or the package itself
                    found |= {f"gate.{a.name}" if f"gate.{a.name}" in modules else "gate" for a in node.names}
                elif node.module in modules:
                    found.add(node.module)
        graph[_module(path)] = found - {_module(path)}
    return graph


def test_the_gate_has_no_import_circle():
    graph = imports_inside_gate()
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import circle in gate/: {' -> '.join(exc.args[1])}") from None
    assert "gate.orchestrator" in graph["gate.run"] and "gate.types" in graph["gate.orchestrator"]
    assert order.index("gate.types") < order.index("gate.plans") < order.index("gate.orchestrator")


def test_the_light_modules_do_not_load_the_whole_gate():
    """A practice shell imports gate.mapping and gate.shims: the package and what they import stay light."""
    graph = imports_inside_gate()
    assert graph["gate"] <= {"gate.types", "gate.run"}  # gate.run only when run_gate is asked for
    for light in ("gate.types", "gate.runner", "gate.mapping", "gate.shims", "gate.parser"):
        assert not graph[light] - {"gate.runner", "gate.mapping", "gate.parser", "gate.types"}, light


def test_nothing_below_the_plan_table_reaches_up_to_it():
    graph = imports_inside_gate()
    above = {"gate", "gate.run", "gate.plans", "gate.orchestrator", "gate.mutants", "gate.report"}
    for low in ("gate.drilled", "gate.badbackups", "gate.scripted", "gate.verification", "gate.stacks"):
        assert not graph[low] & above, low
