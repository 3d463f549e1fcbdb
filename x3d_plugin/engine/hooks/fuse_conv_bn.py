"""Fold BN into the convolutions when testing starts."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from x3d_plugin.registry import HOOKS
from x3d_plugin.models.fuse import fuse_conv_bn


@HOOKS.register_module()
class FuseConvBNHook(Hook):
    """Fold every conv+BN pair of the model before the test loop runs
    (after the checkpoint is loaded); ``tools/test.py --fuse-conv-bn`` adds
    it. Validation during training is left alone: folding is for models
    that are not trained any more."""

    priority = 'VERY_LOW'

    def before_test(self, runner) -> None:
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        model.eval()
        fuse_conv_bn(model)
        runner.logger.info(
            f'folded {model.conv_bn_fused} BN layers into convolutions')
