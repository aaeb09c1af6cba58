"""Find the option keys a piece of Python source reads, by walking its syntax tree (nothing is imported or run).

Used to derive the keys BasicSR's own pipeline and stock models read (:mod:`segsr.utils.option_keys`) and, in the
tests, to keep segsr's declared keys honest.

What counts as a read of key ``k`` in block ``b``: ``X['k']`` (load or store), ``X.get('k', ...)``,
``X.setdefault('k', ...)``, ``X.pop('k', ...)`` and ``'k' in X``, where ``X`` is an expression known to be block
``b``. Block expressions are recognised by the naming conventions BasicSR and segsr share:

- ``opt`` / ``self.opt``: the root (the top level for models and the pipeline, the dataset block for datasets);
  ``model.opt``: the top level; ``dataset.opt`` / ``<...>.dataset.opt``: a dataset block;
- ``train_opt``, ``val_opt``, ``path_opt``, ``logger_opt``, ``dataset_opt``, ``judge_opt``: those blocks;
- a sub-block ``X['b']`` / ``X.get('b')`` (also inside ``dict(...)``, ``deepcopy(...)`` and ``... or {}``);
- local names bound to any of these (``train_opt = self.opt['train']``, ``for name, d in X.items()``).

Keys built at run time (f-strings, variables) are not seen: declare them by hand. Block paths are normalised:
``datasets.<phase>`` is ``dataset``; ``val.metrics.<name>`` is ``val.metrics.*``.
"""
import ast
import inspect
import textwrap
from collections import defaultdict
from typing import Dict, Mapping, Optional, Set

Reads = Dict[str, Set[str]]

NAMED_BLOCKS = {'train_opt': 'train', 'val_opt': 'val', 'path_opt': 'path', 'logger_opt': 'logger',
                'dataset_opt': 'dataset', 'judge_opt': 'val.judge'}
_GETTERS = ('get', 'setdefault', 'pop')
_PASSTHROUGH = ('dict', 'deepcopy', 'copy', 'OrderedDict')


def child_block(block: str, key: str) -> str:
    """The block path of sub-block ``key`` of ``block`` (``''`` is the top level), normalised."""
    if block == 'datasets':
        return 'dataset'
    if block == 'val.metrics':
        return 'val.metrics.*'
    return f'{block}.{key}' if block else key


def _const_str(node: ast.AST) -> Optional[str]:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class _ReadCollector(ast.NodeVisitor):
    """Walks a tree in source order, tracking which local names hold which option block."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.env: Dict[str, str] = dict(NAMED_BLOCKS, opt=root)
        self.reads: Reads = defaultdict(set)

    # ------------------------------------------------------------------------------- which block an expression is
    def block_of(self, node: ast.AST) -> Optional[str]:
        if isinstance(node, ast.Name):
            return self.env.get(node.id)
        if isinstance(node, ast.Attribute) and node.attr == 'opt':
            return self._owner_block(node.value)
        if isinstance(node, ast.Subscript):
            return self._sub_block(node.value, _const_str(node.slice))
        if isinstance(node, ast.Call):
            return self._call_block(node)
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            return self.block_of(node.values[0])
        return None

    def _owner_block(self, owner: ast.AST) -> Optional[str]:
        name = owner.id if isinstance(owner, ast.Name) else getattr(owner, 'attr', None)
        return {'self': self.root, 'model': '', 'dataset': 'dataset'}.get(name)

    def _sub_block(self, value: ast.AST, key: Optional[str]) -> Optional[str]:
        block = self.block_of(value)
        return None if block is None or key is None else child_block(block, key)

    def _call_block(self, node: ast.Call) -> Optional[str]:
        func = node.func
        if isinstance(func, ast.Name) and func.id in _PASSTHROUGH and len(node.args) == 1:
            return self.block_of(node.args[0])
        if isinstance(func, ast.Attribute) and func.attr in _GETTERS and node.args:
            return self._sub_block(func.value, _const_str(node.args[0]))
        return None

    def _record(self, value: ast.AST, key: Optional[str]) -> None:
        block = self.block_of(value)
        if block is not None and key is not None:
            self.reads[block].add(key)

    # ----------------------------------------------------------------------------------------------- the reads
    def visit_Subscript(self, node: ast.Subscript) -> None:
        self._record(node.value, _const_str(node.slice))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _GETTERS and node.args:
            self._record(func.value, _const_str(node.args[0]))
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        if len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            self._record(node.comparators[0], _const_str(node.left))
        self.generic_visit(node)

    # ------------------------------------------------------------------------------------------- the bindings
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        block = self.block_of(node.value)
        for target in node.targets:
            self._bind(target, block)
            self.visit(target)

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self._bind_loop(node.target, node.iter)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        self.visit(node.iter)
        self._bind_loop(node.target, node.iter)
        for cond in node.ifs:
            self.visit(cond)

    def _visit_comprehension_expr(self, node: ast.AST, *results: ast.AST) -> None:
        for gen in node.generators:
            self.visit(gen)
        for result in results:
            self.visit(result)

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._visit_comprehension_expr(node, node.elt)

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._visit_comprehension_expr(node, node.key, node.value)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        saved = dict(self.env)
        self.generic_visit(node)
        self.env = saved

    visit_AsyncFunctionDef = visit_FunctionDef

    def _bind(self, target: ast.AST, block: Optional[str]) -> None:
        if not isinstance(target, ast.Name):
            return
        if block is None:  # a conventional name (``opt = yaml.load(f)``) keeps its meaning
            if target.id not in NAMED_BLOCKS and target.id != 'opt':
                self.env.pop(target.id, None)
        else:
            self.env[target.id] = block

    def _bind_loop(self, target: ast.AST, iterable: ast.AST) -> None:
        """``for k, v in X.items()`` / ``for v in X.values()``: ``v`` is a sub-block of ``X``."""
        call = iterable if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Attribute) else None
        block = self.block_of(call.func.value) if call is not None else None
        if block is None or call.func.attr not in ('items', 'values'):
            return
        value = target.elts[-1] if call.func.attr == 'items' and isinstance(target, ast.Tuple) else target
        self._bind(value, child_block(block, '*'))


def scan_source(source: str, root: str = '') -> Reads:
    """Option keys read by ``source``, by block.

    Args:
        source: Python source (a module, a class or a function).
        root: The block that ``opt`` / ``self.opt`` stand for: ``''`` (top level) or ``'dataset'``.

    Returns:
        ``{block path: {keys}}``, e.g. ``{'train': {'pixel_opt', 'ema_decay'}, 'path': {...}, '': {...}}``.
    """
    collector = _ReadCollector(root)
    collector.visit(ast.parse(textwrap.dedent(source)))
    return dict(collector.reads)


def scan_object(obj: object, root: str = '') -> Reads:
    """:func:`scan_source` of a class's or module's source (empty when the source is not available)."""
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return {}
    return scan_source(source, root)


def merge_reads(*parts: Mapping[str, Set[str]]) -> Reads:
    """Union of several ``{block: keys}`` mappings."""
    out: Reads = defaultdict(set)
    for part in parts:
        for block, keys in part.items():
            out[block].update(keys)
    return dict(out)
