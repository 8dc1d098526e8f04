"""Checks the shape of the code: `python tools/check_imports.py` (exit 1 on a violation).

- mmr_jax's imports flow one way. Every module belongs to a layer (LAYERS, lowest first); a module may import
  from its own layer and the layers below, never from one above, and the imports among all modules form no
  cycle. Imports inside functions count too: a deferred import that goes upward or closes a cycle is still the
  same dependency.
- The models read no host state: nothing in mmr_jax/models imports what looks at the machine (the OS, files,
  the platform, mmr_jax.runtime) or asks JAX which devices or backend there are. Platform choices are made where
  a command starts (mmr_jax.runtime.Platform) and reach the models as plain values.
- The configs import nothing from mmr_jax: loading a config imports neither JAX nor optax.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

# Lowest first. A module's layer is that of the longest prefix naming it.
LAYERS = (
  ("base", ("mmr_jax.errors", "mmr_jax.runtime", "mmr_jax.files")),
  ("data and weights", ("mmr_jax.data", "mmr_jax.weights")),
  ("models", ("mmr_jax.models",)),
  ("equations and metrics", ("mmr_jax.objectives", "mmr_jax.adaptation", "mmr_jax.metrics", "mmr_jax.calibration")),
  ("config and training", ("mmr_jax.config", "mmr_jax.training")),
  ("scoring", ("mmr_jax.scoring",)),
  ("evaluation and reports", ("mmr_jax.evaluation", "mmr_jax.reports", "mmr_jax.figures", "mmr_jax.report_page")),
  ("a run", ("mmr_jax.experiment", "mmr_jax.inference")),
  ("uses of a run", ("mmr_jax.export", "mmr_jax.parity", "mmr_jax.benchmark", "mmr_jax.sweep", "mmr_jax.study")),
  ("commands", ("mmr_jax.cli", "mmr_jax.commands")),
  ("package", ("mmr_jax",)),
)
# What the models may not import or call: the host and the devices are the start-up's to look at.
HOST_MODULES = ("os", "pathlib", "platform", "sys", "subprocess", "socket", "mmr_jax.runtime")
HOST_CALLS = ("default_backend", "devices", "local_devices", "device_count", "process_index", "process_count")


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


def _imported_names(tree: ast.AST) -> set[str]:
  """The modules (or names in them) a file imports, the most specific form of each: `from a.b import c` is a.b.c."""
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


def host_reads(package_dir: pathlib.Path) -> list[str]:
  """Where a module of mmr_jax/models looks at the host: imports of HOST_MODULES, calls of jax.HOST_CALLS, open()."""
  problems = []
  for path in sorted((package_dir / "models").rglob("*.py")):
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(package_dir.parent)
    for name in sorted(_imported_names(tree)):
      if any(name == banned or name.startswith(banned + ".") for banned in HOST_MODULES):
        problems.append(f"host read: {where} imports {name}")
    for node in ast.walk(tree):
      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "jax":
        if node.attr in HOST_CALLS:
          problems.append(f"host read: {where}:{node.lineno} calls jax.{node.attr}")
      if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
        problems.append(f"host read: {where}:{node.lineno} opens a file")
  return problems


def config_imports(configs_dir: pathlib.Path) -> list[str]:
  """Imports of mmr_jax in the config files."""
  problems = []
  for path in sorted(configs_dir.rglob("*.py")):
    for name in sorted(_imported_names(ast.parse(path.read_text(), str(path)))):
      if name == "mmr_jax" or name.startswith("mmr_jax."):
        problems.append(f"config import: {path.relative_to(configs_dir.parent)} imports {name}")
  return problems


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  root = pathlib.Path(__file__).parents[1]
  parser.add_argument("--package_dir", default=str(root / "mmr_jax"))
  parser.add_argument("--configs_dir", default=str(root / "configs"))
  args = parser.parse_args()
  package_dir = pathlib.Path(args.package_dir)
  problems = violations(package_dir) + host_reads(package_dir) + config_imports(pathlib.Path(args.configs_dir))
  for problem in problems:
    print(problem)
  print(
    f"{len(problems)} problem(s)"
    if problems
    else "imports flow one way (no upward import, no cycle); the models read no host state; the configs import "
    "nothing from mmr_jax"
  )
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
