"""segsr's imports, read from the source (no import runs): layers hold and there is no cycle, not even through an
import inside a function (which only defers the cycle to the first call)."""
import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set

from conftest import REPO

PACKAGE = Path(REPO, 'segsr')


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (imports for type hints only)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path, modules: Set[str]) -> Set[str]:
    """segsr modules that ``path`` imports at run time, at module level or inside functions (``from a import b``: ``a.b`` when it
    is a module, else ``a``)."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            submodules = {f'{node.module}.{alias.name}' for alias in node.names} & modules
            found |= submodules if len(submodules) == len(node.names) else submodules | {node.module}
    return {name for name in found if name in modules} - {module_name(path)}


def import_graph() -> Dict[str, Set[str]]:
    paths = sorted(PACKAGE.rglob('*.py'))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle per strongly connected component of more than one module (or a module importing itself)."""
    found, state = [], {}

    def visit(node: str, path: List[str]) -> None:
        state[node] = 'open'
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 'open':
                found.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 'done'

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_there_is_no_import_cycle_among_segsr_modules():
    graph = import_graph()
    assert len(graph) > 40 and 'segsr.weights' in graph
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c', 'a']]


def test_utils_and_weights_import_no_models_or_archs():
    graph = import_graph()
    upward = {name: sorted(d for d in deps if d.startswith(('segsr.models', 'segsr.archs')))
              for name, deps in graph.items() if name.startswith('segsr.utils') or name == 'segsr.weights'}
    assert {name: deps for name, deps in upward.items() if deps} == {}
