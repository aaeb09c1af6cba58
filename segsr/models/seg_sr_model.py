"""BasicSR's SR and ESRGAN models with task-aware validation (judge mIoU next to PSNR/SSIM).

Training is exactly BasicSR's; only validation changes. Use them to report stock baselines with the same judge as
segsr's own methods: change ``model_type: SRModel`` to ``SegSRModel`` (or ``ESRGANModel`` to ``SegESRGANModel``)
and add a ``val.judge`` block.
"""
from basicsr.models.esrgan_model import ESRGANModel
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from segsr.models.base import SegsrModelMixin
from segsr.models.validation import TaskValidator


@MODEL_REGISTRY.register()
class SegSRModel(SegsrModelMixin, SRModel):
    """``SRModel`` (pixel/perceptual losses) whose validation also reports the judge's mIoU on SR outputs."""

    PARTS = (TaskValidator, )

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        self.task_validator = TaskValidator(self.opt, self.device)


@MODEL_REGISTRY.register()
class SegESRGANModel(SegsrModelMixin, ESRGANModel):
    """``ESRGANModel`` whose validation also reports the judge's mIoU on SR outputs."""

    PARTS = (TaskValidator, )

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        self.task_validator = TaskValidator(self.opt, self.device)
