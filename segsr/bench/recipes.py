"""The benchmark's rows: a registry of row recipes, one per fine-tuned method, in table order.

A recipe declares its key (the row's key and the step name of its runs, ``<key>_s<seed>``), its table label, its own
predictor kind (None, ``'task'``: its trained task network ``net_task``, ``'disc'``: its discriminator's task head;
see :mod:`segsr.bench.predictors`), the starting points its options name, whether it reads the deployed network's
feature (``deployed.feature``), and a function building its BasicSR option dict from an
:class:`segsr.bench.options.OptionBuilder` (profile, data, checkpoints, the shared option pieces) and a
:class:`Step` (its id and seed). Adding a method to the benchmark = one ``@recipe`` function here + its model file.

The table rows (:func:`table_rows`) and the fine-tuned steps (:func:`finetune_steps`) follow the registration order,
after the three reference rows (HR, bicubic, the L1 start).
"""
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple, Union

from segsr.bench.predictors import OWN_PREDICTORS

if TYPE_CHECKING:
    from segsr.bench.options import OptionBuilder

START_STEPS = ('judge', 'deployed', 'l1', 'disc')  # trained once per options, cached across profiles, seeds, reruns
REFERENCE = 's2t'  # every interval is a difference to S->T of the same seed
SPEED_BASE = 'esrgan'


@dataclass(frozen=True)
class Row:
    """One table row.

    Args:
        key: The row's key (state keys ``<key>_s<seed>``, ``results.json``).
        label: The table label.
        kind: ``hr`` (the judge on HR), ``bicubic`` or ``generator``.
        step: The training step that made it (None: bicubic).
        own: The method's own predictor kind (``task`` | ``disc``; None: none).
    """
    key: str
    label: str
    kind: str
    step: Optional[str] = None
    own: Optional[str] = None


REFERENCE_ROWS = (
    Row('hr', 'H->T (judge on HR)', 'hr', step='judge'),
    Row('bicubic', 'L->T (bicubic)', 'bicubic'),
    Row('l1', 'L1 start (stock SRModel)', 'generator', step='l1'),
)


@dataclass(frozen=True)
class Step:
    """One training run.

    Args:
        id: Its id (options file, run folder, state key): a starting point's name or ``<recipe key>_s<seed>``.
        base: The recipe or starting point it runs.
        seed: Its fine-tuning seed (None for a starting point: trained once, its seed is in its options).
    """
    id: str
    base: str
    seed: Optional[int] = None


Build = Callable[['OptionBuilder', Step], dict]


@dataclass(frozen=True)
class Recipe:
    """A fine-tuned row.

    Args:
        key: Row key and step name (runs ``<key>_s<seed>``; profile keys ``rows``, ``labels``, ``overrides.<key>``).
        label: The table label (a profile's ``labels.<key>`` renames it).
        build: ``build(builder, step)``: the run's BasicSR options (before the profile's ``overrides``).
        own: The method's own predictor kind: None, ``'task'`` or ``'disc'``.
        starts: Starting points whose checkpoints its options may name (``disc``: only with the warm start).
        feature: Whether it reads ``deployed.feature`` from the deployed network: a bool, or a function of the
            profile.
        tasks: The tasks it runs for (``seg``, ``det``, ``cls``): methods built on a segmentation head or on a
            segmenter's semantics are ``('seg', )``.
    """
    key: str
    label: str
    build: Build
    own: Optional[str] = None
    starts: Tuple[str, ...] = ('l1', )
    feature: Union[bool, Callable[[dict], bool]] = False
    tasks: Tuple[str, ...] = ('seg', 'det', 'cls')

    @property
    def row(self) -> Row:
        """Its table row (a generator row, fine-tuned from the L1 start)."""
        return Row(self.key, self.label, 'generator', step=self.key, own=self.own)

    def needs_feature(self, profile: dict) -> bool:
        """Whether the row reads ``deployed.feature`` of the deployed network under ``profile``."""
        return bool(self.feature(profile) if callable(self.feature) else self.feature)


class RecipeRegistry:
    """The fine-tuned rows by key, in registration order (the table's order)."""

    def __init__(self) -> None:
        self._recipes: Dict[str, Recipe] = {}

    def register(self, recipe: Recipe) -> Recipe:
        """Add ``recipe`` after the others.

        Args:
            recipe: A recipe whose key is lower-case letters and digits, and new (not a row's or starting point's).
        """
        if not re.fullmatch(r'[a-z][a-z0-9]*', recipe.key):
            raise ValueError(f"benchmark recipe '{recipe.key}': a key is lower-case letters and digits only.")
        if recipe.key in self._recipes or recipe.key in START_STEPS or recipe.key in [r.key for r in REFERENCE_ROWS]:
            raise ValueError(f"benchmark recipe '{recipe.key}': the name is taken.")
        if recipe.own is not None and recipe.own not in OWN_PREDICTORS:
            raise ValueError(f"benchmark recipe '{recipe.key}': own = {recipe.own!r}; expected None or one of "
                             f'{list(OWN_PREDICTORS)}.')
        unknown = set(recipe.starts) - set(START_STEPS)
        if unknown:
            raise ValueError(f"benchmark recipe '{recipe.key}': unknown starting points {sorted(unknown)}; "
                             f'starting points: {list(START_STEPS)}.')
        self._recipes[recipe.key] = recipe
        return recipe

    def unregister(self, key: str) -> None:
        """Remove a recipe.

        Args:
            key: The recipe's key.
        """
        del self._recipes[key]

    def __getitem__(self, key: str) -> Recipe:
        return self._recipes[key]

    def __contains__(self, key: str) -> bool:
        return key in self._recipes

    def keys(self) -> Tuple[str, ...]:
        """The fine-tuned steps, in registration order."""
        return tuple(self._recipes)

    def recipes(self) -> List[Recipe]:
        """The recipes, in registration order."""
        return list(self._recipes.values())


REGISTRY = RecipeRegistry()


def finetune_steps() -> Tuple[str, ...]:
    """The fine-tuned rows' step names (from the L1 start, per seed), in registration order."""
    return REGISTRY.keys()


def table_rows() -> Tuple[Row, ...]:
    """Every table row: HR, bicubic, the L1 start, then each recipe's row in registration order."""
    return REFERENCE_ROWS + tuple(r.row for r in REGISTRY.recipes())


def recipe(key: str, label: str, own: Optional[str] = None, starts: Tuple[str, ...] = ('l1', ),
           feature: Union[bool, Callable[[dict], bool]] = False,
           tasks: Tuple[str, ...] = ('seg', 'det', 'cls')) -> Callable[[Build], Build]:
    """Decorator: register the decorated ``build(builder, step)`` as the recipe ``key`` (arguments: :class:`Recipe`)."""

    def register(build: Build) -> Build:
        REGISTRY.register(Recipe(key, label, build, own, starts, feature, tasks))
        return build

    return register


# ------------------------------------------------------------------------------------------------ the shipped rows
@recipe('s2t', 'S->T (L1 fine-tune)')
def s2t(b: 'OptionBuilder', step: Step) -> dict:
    """S->T: the L1 start continued with L1 alone (stock ``SRModel``)."""
    return b.finetune_opt(step.id, 'SRModel', step.seed)


@recipe('esrgan', 'ESRGAN (stock ESRGANModel)')
def esrgan(b: 'OptionBuilder', step: Step) -> dict:
    """Stock ESRGAN: ``ESRGANModel`` with BasicSR's ``VGGStyleDiscriminator``."""
    stage = b.p['finetune']
    d = dict(type='VGGStyleDiscriminator', num_in_ch=3, num_feat=int(stage.get('d_feat', 64)),
             input_size=int(stage['gt_size']))
    return b.gan_opt(step.id, 'ESRGANModel', d, step.seed)


@recipe('segaware', 'SegAwareGAN (task-branch D)', own='disc', starts=('l1', 'disc'), tasks=('seg', ))
def segaware(b: 'OptionBuilder', step: Step) -> dict:
    """The segmentation-aware GAN (task-branch discriminator), from the ``disc`` warm start when there is one."""
    opt = b.gan_opt(step.id, 'SegAwareGANModel', b.seg_aware_d(semantic=False), step.seed)
    opt['train'].update(b.task_losses())
    if b.warm_start:
        opt['path'].update(pretrain_network_d=b.checkpoint('disc', 'task'), param_key_d='params', strict_load_d=True)
    return opt


def _sr4ir_base(b: 'OptionBuilder', step: Step) -> dict:
    """``SR4IRModel`` on the shared schedule, its task network the deployed network."""
    opt = b.finetune_opt(step.id, 'SR4IRModel', step.seed)
    opt['network_task'] = b.frozen_network('deployed')
    opt['path'].update(pretrain_network_task=b.checkpoint('deployed', 'task'))
    opt['train']['scheduler_g'] = opt['train'].pop('scheduler')
    return opt


@recipe('sr4ir', 'SR4IR (TDP + alternate)', own='task', starts=('l1', 'deployed'), feature=True)
def sr4ir(b: 'OptionBuilder', step: Step) -> dict:
    """SR4IR on the shared schedule; its task network starts from the deployed network."""
    iters = int(b.p['finetune']['iters'])
    opt = _sr4ir_base(b, step)
    task_loss = b.task_loss(0.34)
    opt['train'].update(
        update_sr=True, update_task=True, alternate=True,
        optim_task=dict(type='AdamW', lr=float(b.p.get('sr4ir_task_lr', 2e-4)), weight_decay=1e-4),
        scheduler_task=dict(type='MultiStepLR', milestones=[max(1, int(2 * iters / 3))], gamma=0.5),
        task_sr_opt=dict(task_loss), task_hr_opt=dict(task_loss), task_cqmix_opt=dict(task_loss),
        cqmix=dict(grid=8, prob=0.5), **b.tdp())
    return opt


@recipe('sed', 'SeD (P+SeD)', starts=('l1', 'deployed'), feature=True, tasks=('seg', ))
def sed(b: 'OptionBuilder', step: Step) -> dict:
    """SeD (P+SeD): its patch discriminator conditioned on the deployed network's semantics."""
    dim, stride = b.semantic_shape()
    d = dict(type='SeDPatchDiscriminator', num_in_ch=3, num_feat=int(b.p['finetune'].get('d_feat', 64)),
             semantic_dim=dim, semantic_stride=stride)
    opt = b.gan_opt(step.id, 'SeDModel', d, step.seed)
    opt['network_sem'] = b.semantic_extractor()
    return opt


@recipe('combo', 'Combination (task branch + SeD + TDP)', own='disc', starts=('l1', 'deployed'), feature=True,
        tasks=('seg', ))
def combo(b: 'OptionBuilder', step: Step) -> dict:
    """The combination: task-branch discriminator conditioned on SeD's semantics, plus TDP."""
    opt = b.gan_opt(step.id, 'SegAwareGANModel', b.seg_aware_d(semantic=True), step.seed)
    opt['network_sem'] = b.semantic_extractor()
    opt['network_task'] = b.frozen_network('deployed')
    opt['path'].update(pretrain_network_task=b.checkpoint('deployed', 'task'))
    opt['train'].update(b.task_losses(), **b.tdp())
    return opt


@recipe('sfms', 'SR for my segmenter (CE through the deployed net)', starts=('l1', 'deployed'),
        feature=lambda profile: bool(profile['finetune'].get('sfms_tdp')))
def sfms(b: 'OptionBuilder', step: Step) -> dict:
    """*SR for my segmenter*: L1 + ``finetune.ce_weight`` x cross-entropy through the frozen deployed network
    (+ TDP with ``finetune.sfms_tdp``), back-propagated into the SR network only (SR4IR's T2S)."""
    stage = b.p['finetune']
    opt = _sr4ir_base(b, step)
    opt['train'].update(update_sr=True, update_task=False, sr_ce_opt=b.task_loss(float(stage.get('ce_weight', 0.1))))
    if stage.get('sfms_tdp'):
        opt['train'].update(b.tdp())
    return opt
