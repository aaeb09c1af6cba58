"""Benchmark profiles: read (a shipped name or a YAML path, with ``base:`` chains), merge and check.

Profiles ship with the package in ``segsr/benchmark_profiles/<name>.yml``; any YAML path works too. A profile with
``base: <profile>`` states only what it changes (``rows`` picks fine-tuned rows, ``labels`` renames them: the
ablations in ``options/benchmark/``).
"""
import os.path as osp
import re
from copy import deepcopy
from importlib import resources
from typing import Dict, List, Tuple

import yaml

from segsr.bench.recipes import REFERENCE, START_STEPS, finetune_steps, table_rows
from segsr.data.seg_transforms import LQ_DOWNSAMPLE_METHODS

PROFILE_PACKAGE = 'segsr.benchmark_profiles'
REQUIRED_KEYS = ('name', 'data', 'judge', 'deployed', 'generator', 'l1', 'finetune')
STAGE_KEYS = ('iters', 'batch', 'gt_size', 'lr')
EXTRA_JUDGE_PREFIX = 'judge_'  # the step of an other-family judge `judges.<name>`: judge_<name> (a starting point too)
OPTIONAL_START = 'disc'  # the task-branch warm start: only with finetune.task_d_warm_start
DEFAULT_EMA_DECAY = 0.999  # BasicSR's; a stage's `ema_decay` when the profile gives none
MAX_EMA_START_WEIGHT = 0.05  # ema_decay ** iters: the share of a run's starting weights left in its scored EMA


def profile_names() -> List[str]:
    """Names of the profiles shipped with the package (``segsr/benchmark_profiles/*.yml``)."""
    return sorted(p.name[:-4] for p in resources.files(PROFILE_PACKAGE).iterdir() if p.name.endswith('.yml'))


def ema_decay(stage: dict) -> float:
    """A training stage's EMA decay (``DEFAULT_EMA_DECAY`` when the profile gives none).

    Args:
        stage: A profile's training stage (``l1``, ``finetune``, ...).
    """
    return float(stage.get('ema_decay', DEFAULT_EMA_DECAY))


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated recursively by ``update`` (new dict; a None value in ``update`` replaces, and so does a
    block with another ``type``: a network of another class keeps none of the old one's arguments).

    Args:
        base: The dict to start from (not changed).
        update: What changes (not changed).
    """
    out = deepcopy(base)
    for key, value in (update or {}).items():
        old = out.get(key)
        merge = isinstance(value, dict) and isinstance(old, dict) and \
            value.get('type', old.get('type')) == old.get('type')
        out[key] = deep_merge(old, value) if merge else deepcopy(value)
    return out


def load_profile(name_or_path: str) -> dict:
    """Read a profile (a shipped profile's name or a YAML path) and check its keys (errors name the file).

    A profile with ``base: <name or path>`` is that profile (a relative path: relative to this file) updated
    recursively by the rest of this one: an ablation states only what it changes.

    Args:
        name_or_path: A shipped profile's name (:func:`profile_names`) or a ``.yml`` / ``.yaml`` path.
    """
    profile, path = _read_profile(name_or_path, chain=())
    _check_profile(profile, path)
    profile['_path'] = path
    return profile


def _profile_text(name_or_path: str) -> Tuple[str, str]:
    """The profile file's text and its path (a file's absolute path, or ``segsr.benchmark_profiles:<name>.yml``)."""
    if name_or_path.endswith(('.yml', '.yaml')):
        if not osp.isfile(name_or_path):
            raise FileNotFoundError(f"benchmark profile file '{name_or_path}' does not exist.")
        path = osp.abspath(name_or_path)
        with open(path) as f:
            return f.read(), path
    if name_or_path not in profile_names():
        raise FileNotFoundError(f"benchmark profile '{name_or_path}' not found; shipped profiles: "
                                f'{profile_names()} (or pass a YAML path).')
    resource = resources.files(PROFILE_PACKAGE) / f'{name_or_path}.yml'
    return resource.read_text(encoding='utf-8'), f'{PROFILE_PACKAGE}:{name_or_path}.yml'


def _read_profile(name_or_path: str, chain: Tuple[str, ...]) -> Tuple[dict, str]:
    """The profile's dict with its ``base`` chain merged in, and the profile's path (for messages)."""
    text, path = _profile_text(name_or_path)
    profile = yaml.safe_load(text) or {}
    if not isinstance(profile, dict):
        raise ValueError(f'{path}: a profile is a mapping of keys, not a {type(profile).__name__}.')
    base = profile.pop('base', None)
    if base is None:
        return profile, path
    if path in chain:
        raise ValueError(f"{path}: 'base' chain loops: {' -> '.join(chain + (path,))}.")
    if str(base).endswith(('.yml', '.yaml')) and not osp.isabs(base) and osp.isfile(path):
        base = osp.join(osp.dirname(path), base)
    try:
        base_profile, _ = _read_profile(str(base), chain + (path,))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: 'base' = {base!r}: {err}") from err
    return deep_merge(base_profile, profile), path


def _check_profile(profile: dict, path: str) -> None:
    for key in REQUIRED_KEYS:
        if key not in profile:
            raise ValueError(f"{path}: key '{key}' is required.")
    _check_stages(profile, path)
    seeds = profile.get('seeds', [profile.get('seed', 0)])
    if not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: 'seeds' = {seeds!r}; expected a non-empty list of distinct integers.")
    steps = finetune_steps()
    unknown_rows = set(profile.get('seeded_rows') or []) - set(steps)
    if unknown_rows:
        raise ValueError(f"{path}: 'seeded_rows' has unknown rows {sorted(unknown_rows)}; fine-tuned rows: "
                         f'{list(steps)}.')
    jobs = profile.get('jobs', 1)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"{path}: 'jobs' = {jobs!r}; expected a positive integer (training runs at a time).")
    for key in ('device', 'amp'):
        allowed = {'device': ('cpu', 'cuda', 'auto'), 'amp': (False, 'bf16', 'auto')}[key]
        if profile.get(key, allowed[0]) not in allowed:
            raise ValueError(f"{path}: '{key}' = {profile[key]!r}; expected one of {list(allowed)}.")
    train_steps = START_STEPS + steps
    unknown = set(profile.get('overrides') or {}) - set(train_steps)
    if unknown:
        raise ValueError(f"{path}: 'overrides' has unknown steps {sorted(unknown)}; steps: {list(train_steps)}.")
    keys = [r.key for r in table_rows()]
    unknown = set(profile.get('labels') or {}) - set(keys)
    if unknown:
        raise ValueError(f"{path}: 'labels' has unknown rows {sorted(unknown)}; rows: {keys}.")
    _check_kernels(profile, path)
    rows = profile.get('rows', list(steps))
    if not isinstance(rows, list) or set(rows) - set(steps) or REFERENCE not in rows:
        raise ValueError(f"{path}: 'rows' = {rows!r}; expected a list of fine-tuned rows from {list(steps)} "
                         f"that includes '{REFERENCE}' (every interval is a difference to it).")


def _check_stages(profile: dict, path: str) -> None:
    """Every training stage has :data:`STAGE_KEYS`; the fine-tuning crop suits ESRGAN's discriminator; the scored
    EMA weights have left the start."""
    stages = {s: profile[s] for s in ('judge', 'deployed', 'l1', 'finetune')}
    stages.update({f'judges.{name}': stage for name, stage in _extra_judges(profile, path).items()})
    if profile['finetune'].get('task_d_warm_start') is not None:
        stages['finetune.task_d_warm_start'] = profile['finetune']['task_d_warm_start']
    for stage, values in stages.items():
        missing = [k for k in STAGE_KEYS if k not in (values or {})]
        if missing:
            raise ValueError(f"{path}: '{stage}' needs keys {missing}.")
    if profile['finetune']['gt_size'] not in (128, 256):
        raise ValueError(f"{path}: 'finetune.gt_size' = {profile['finetune']['gt_size']}: stock ESRGAN's "
                         'VGGStyleDiscriminator takes 128 or 256.')
    for stage in ('l1', 'finetune'):  # the EMA weights are the ones scored: they must have left the start
        decay, iters = ema_decay(profile[stage]), int(profile[stage]['iters'])
        if not 0 < decay < 1 or decay**iters > MAX_EMA_START_WEIGHT:
            raise ValueError(f"{path}: '{stage}.ema_decay' = {decay} over {iters} iterations keeps "
                             f'{decay**iters:.0%} of the starting weights in the EMA that is scored (at most '
                             f'{MAX_EMA_START_WEIGHT:.0%}): lower it or raise {stage}.iters.')


def _extra_judges(profile: dict, path: str) -> Dict[str, dict]:
    """``judges``: other-family judges by name (each a stage with a ``network`` block), checked."""
    judges = profile.get('judges') or {}
    if not isinstance(judges, dict):
        raise ValueError(f"{path}: 'judges' must map judge names to training stages, got {type(judges).__name__}.")
    for name, stage in judges.items():
        if not re.fullmatch(r'[a-z0-9]+', str(name)):
            raise ValueError(f"{path}: 'judges.{name}': a judge name is lower-case letters and digits only.")
        if not isinstance(stage, dict) or not isinstance(stage.get('network'), dict) or 'type' not in stage['network']:
            raise ValueError(f"{path}: 'judges.{name}' needs a 'network' block with a 'type'.")
    return judges


def _check_kernels(profile: dict, path: str) -> None:
    """``lq_downsample`` (one method), ``l1.lq_downsample`` (one or a list: the L1 start's training mix) and
    ``kernels`` (methods every row is also scored with) name known downsampling methods."""
    train = profile.get('lq_downsample', 'matlab')
    checks = {'lq_downsample': [train], 'kernels': profile.get('kernels') or []}
    mix = profile['l1'].get('lq_downsample', train)
    checks['l1.lq_downsample'] = mix if isinstance(mix, list) else [mix]
    for key, methods in checks.items():
        if not isinstance(methods, list) or not methods and key != 'kernels':
            raise ValueError(f"{path}: '{key}' = {methods!r}; expected a method or a list of methods.")
        unknown = [m for m in methods if m not in LQ_DOWNSAMPLE_METHODS]
        if unknown:
            raise ValueError(f"{path}: '{key}' has unknown downsampling methods {unknown}; choose from "
                             f'{list(LQ_DOWNSAMPLE_METHODS)}.')
    if train in checks['kernels']:
        raise ValueError(f"{path}: 'kernels' lists the training kernel '{train}' (lq_downsample); it is scored anyway.")
