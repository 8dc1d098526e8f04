"""Checks that mmr_jax's imports flow one way: `python tools/check_imports.py` (exit 1 on a violation).

Every module belongs to a layer (LAYERS, lowest first); a module may import from its own layer and the layers
below, never from one above, and the imports among all modules form no cycle. Imports inside functions count
too: a deferred import that goes upward or closes a cycle is still the same dependency.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

# Lowest first. A module's layer is that of the longest prefix naming it.
LAYERS = (
  ("base", ("mmr_jax.errors", "mmr_jax.runtime")),
  ("data and weights", ("mmr_jax.data", "mmr_jax.weights")),
  ("models", ("mmr_jax.models",)),
  ("equations and metrics", ("mmr_jax.objectives", "mmr_jax.metrics", "mmr_jax.calibration")),
  ("config and training", ("mmr_jax.config", "mmr_jax.training")),
  ("evaluation and reports", ("mmr_jax.evaluation", "mmr_jax.reports", "mmr_jax.figures", "mmr_jax.report_page")),
  ("a run", ("mmr_jax.experiment", "mmr_jax.inference")),
  (
    "commands",
    ("mmr_jax.cli", "mmr_jax.export", "mmr_jax.parity", "mmr_jax.benchmark", "mmr_jax.sweep", "mmr_jax.data.benchmark"),
  ),
  ("package", ("mmr_jax",)),
)


def module_names(package_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  """{dotted module name: file} for every .py file under the package folder."""
  names = {}
  for path in sorted(package_dir.rglob("*.py")):
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return names


def imports_of(path: pathlib.Path, name: str, known: set[str]) -> set[str]:
  """The project modules `path` imports (at any depth), resolved to the most specific known module."""
  found = set()
  package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
      targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
    else:
      continue
    for target in targets:
      while target and target not in known:
        target = target.rpartition(".")[0]
      if target and target != name:
        found.add(target)
  # `from mmr_jax.data import layouts` names both the package and the module: keep the module only.
  return {t for t in found if not any(other.startswith(t + ".") for other in found)}


def layer_of(name: str) -> int:
  best, best_length = None, -1
  for index, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_length:
        best, best_length = index, len(prefix)
  if best is None:
    raise ValueError(f"{name} is in no layer of tools/check_imports.py: add it to LAYERS")
  return best


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of the graph as [a, b, ..., a], or None."""
  state: dict[str, int] = {}  # 1 on the current path, 2 done.
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for successor in sorted(graph.get(node, ())):
      if state.get(successor) == 1:
        return path[path.index(successor) :] + [successor]
      if successor not in state:
        cycle = visit(successor)
        if cycle:
          return cycle
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def violations(package_dir: pathlib.Path) -> list[str]:
  modules = module_names(package_dir)
  graph = {name: imports_of(path, name, set(modules)) for name, path in modules.items()}
  problems = []
  for name, targets in sorted(graph.items()):
    for target in sorted(targets):
      if target in modules and layer_of(target) > layer_of(name) and not name == "mmr_jax":
        problems.append(
          f"upward import: {name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        )
  cycle = find_cycle({name: {t for t in targets if t in modules and t != "mmr_jax"} for name, targets in graph.items()})
  if cycle:
    problems.append("import cycle: " + " → ".join(cycle))
  return problems


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--package_dir", default=str(pathlib.Path(__file__).parents[1] / "mmr_jax"))
  problems = violations(pathlib.Path(parser.parse_args().package_dir))
  for problem in problems:
    print(problem)
  print(f"{len(problems)} problem(s)" if problems else "imports flow one way: no upward import, no cycle")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
