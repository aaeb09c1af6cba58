"""SeD: ESRGAN and Real-ESRGAN training with a semantic-aware discriminator.

Li et al., "SeD: Semantic-Aware Discriminator for Image Super-Resolution", CVPR 2024. The discriminator judges real
(HR) and fake (SR) images under the semantics of the HR image, taken from a frozen pretrained extractor (CLIP RN50
up to ``layer3`` by default), so it learns the texture distribution per semantic region instead of one coarse
distribution for all images.

Drop-in: a BasicSR ESRGAN config (``train_ESRGAN_x4.yml`` form) or Real-ESRGAN config
(``train_realesrgan_x4plus.yml`` form) becomes a SeD run by changing ``model_type`` and ``network_d`` only::

    model_type: SeDModel                 # was ESRGANModel  (SeDRealESRGANModel: was RealESRGANModel)
    network_d:
      type: SeDPatchDiscriminator        # was VGGStyleDiscriminator (SeDUNetDiscriminator: was UNetDiscriminatorSN)

The extractor defaults to CLIP RN50 with OpenAI's weights (``network_sem`` overrides it, e.g. with a local file
or a network trained on your own data). The training step is segsr's shared GAN step
(:mod:`segsr.models.gan_step`): semantics once per batch, relativistic-average GAN by default for ``SeDModel``
(ESRGAN's step), standard GAN by default for ``SeDRealESRGANModel`` (Real-ESRGAN's); ``train.relativistic``
switches either way.
"""
from typing import Dict

from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor

from segsr.models.gan_step import GANStepModel
from segsr.models.realesr_util import DeviceAwareRealESRGANModel

DEFAULT_SEMANTIC_EXTRACTOR = {'type': 'CLIPSemanticExtractor', 'model_name': 'RN50', 'pretrained': 'openai',
                              'layer': 'layer3'}


@MODEL_REGISTRY.register()
class SeDModel(GANStepModel):
    """ESRGAN's training step with a semantic-aware discriminator (``SeDPatchDiscriminator`` / ``SeDUNetDiscriminator``).

    Options: those of BasicSR's ``ESRGANModel`` (``pixel_opt``, ``perceptual_opt``, ``gan_opt``, ``optim_g``,
    ``optim_d``, ``scheduler``, ``ema_decay``, ``net_d_iters``, ``net_d_init_iters``), plus
        network_sem: Semantic extractor block. Default: CLIP RN50 ``layer3`` with OpenAI weights
            (``{type: CLIPSemanticExtractor, model_name: RN50, pretrained: openai}``; needs ``pip install -e '.[clip]'``).
        path.pretrain_network_sem: Weights of the extractor (BasicSR checkpoint or state dict), e.g. on resume.
        train.relativistic: Relativistic-average GAN (ESRGAN). Default: True.

    Validation: BasicSR's metrics; with ``val.judge`` and a labelled val set, also the judge's mIoU.
    """

    default_relativistic = True
    default_network_sem = DEFAULT_SEMANTIC_EXTRACTOR
    semantic_required = True

    def init_training_settings(self) -> None:
        if self.opt['train'].get('ldl_opt'):
            raise ValueError(f"Option 'train.ldl_opt' is not supported by {type(self).__name__}.")
        super().init_training_settings()
        self.init_gan_step()


@MODEL_REGISTRY.register()
class SeDRealESRGANModel(DeviceAwareRealESRGANModel, SeDModel):
    """Real-ESRGAN training (BasicSR's on-the-fly second-order degradations and training-pair pool) with SeD.

    Options: those of BasicSR's ``RealESRGANModel`` (degradation settings, ``queue_size``, ``l1_gt_usm``,
    ``percep_gt_usm``, ``gan_gt_usm``, losses, optimizers) plus ``network_sem`` as in :class:`SeDModel`;
    ``train.relativistic`` defaults to False (Real-ESRGAN's standard GAN). The semantics come from the HR batch
    before USM sharpening; the discriminator sees the sharpened HR as real when ``gan_gt_usm`` is on. Trains on
    CPU too (:class:`segsr.models.realesr_util.DeviceAwareRealESRGANModel`).
    """

    default_relativistic = False

    optimize_parameters = GANStepModel.optimize_parameters  # segsr's step, not RealESRGANModel's copy of ESRGAN's

    def loss_targets(self) -> Dict[str, Tensor]:
        def pick(flag: str) -> Tensor:
            return self.gt_usm if self.opt.get(flag, True) else self.gt

        return {'pix': pick('l1_gt_usm'), 'percep': pick('percep_gt_usm'), 'gan': pick('gan_gt_usm')}
