"""One generator loader for every command: options files, checkpoints (spandrel detection), safetensors, and the
errors a user gets for files it cannot use. Tiny networks, real loading, no downloads."""
import pytest
import torch
from basicsr.archs import build_network

from conftest import write_yaml
from helpers.options import TINY_COMPACT, TINY_RRDB, TINY_UNET
from segsr.utils.checkpoint import save_network
from segsr.utils.model_io import load_generator, load_segmenter
from helpers.models import Payload, training_checkpoint

# spandrel's RRDB detection assumes ESRGAN's 32 growth channels; the rest is as tiny as TINY_RRDB
SPANDREL_RRDB = dict(TINY_RRDB, num_grow_ch=32, scale=4)


@pytest.mark.parametrize('block', [TINY_COMPACT, SPANDREL_RRDB], ids=['compact', 'rrdb'])
def test_training_checkpoint_loads_through_spandrel_and_options_to_identical_outputs(block, tmp_path):
    net = training_checkpoint(block, tmp_path / 'net_g_latest.pth')
    opt_path = write_yaml(tmp_path / 'train.yml', {
        'name': 'x', 'scale': 4, 'network_g': dict(block),
        'path': {'pretrain_network_g': str(tmp_path / 'net_g_latest.pth'), 'param_key_g': 'params_ema'}})
    detected = load_generator(str(tmp_path / 'net_g_latest.pth'))
    from_options = load_generator(opt_path)
    assert 'spandrel' in detected.source and detected.scale == from_options.scale == 4
    assert not detected.net.training and not any(p.requires_grad for p in detected.net.parameters())
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        expected = net(x)
        assert torch.equal(from_options(x), expected)
        assert torch.equal(detected(x), expected)  # params_ema was preferred (params are zeros)


def test_safetensors_and_network_block_routes(tmp_path):
    from safetensors.torch import save_file

    net = training_checkpoint(TINY_RRDB, tmp_path / 'g.pth')  # 4 growth channels: spandrel cannot build it
    save_file(net.state_dict(), str(tmp_path / 'g.safetensors'))
    x = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        for model in ('g.pth', 'g.safetensors'):
            loaded = load_generator(str(tmp_path / model), network=dict(TINY_RRDB, scale=4))
            assert loaded.arch == 'RRDBNet' and loaded.scale == 4 and torch.equal(loaded(x), net(x))
        inline = load_generator(str(tmp_path / 'g.safetensors'), network='{type: RRDBNet, num_in_ch: 3, num_out_ch: 3, '
                                'num_feat: 8, num_block: 1, num_grow_ch: 4, scale: 4}')
        assert torch.equal(inline(x), net(x))
    with pytest.raises(ValueError, match=r"(?s)g\.safetensors.*--network"):
        load_generator(str(tmp_path / 'g.safetensors'))
    with pytest.raises(ValueError, match=r"cannot build RRDBNet.*num_in_ch"):
        load_generator(str(tmp_path / 'g.pth'), network={'type': 'RRDBNet', 'num_feat': 8})


def test_unknown_checkpoint_names_the_file_and_what_to_pass(tmp_path):
    torch.save({'params': {'encoder.weight': torch.randn(4, 4), 'head.bias': torch.randn(4)}}, tmp_path / 'odd.pth')
    with pytest.raises(ValueError, match=r"spandrel cannot identify the architecture of '.*odd\.pth'.*options file.*"
                       r"--network"):
        load_generator(str(tmp_path / 'odd.pth'), option_name='--model')
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint at all')
    with pytest.raises(ValueError, match=r"'.*junk\.pth' is not a readable checkpoint"):
        load_generator(str(tmp_path / 'junk.pth'))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_generator(str(tmp_path / 'missing.pth'))
    no_weights = write_yaml(tmp_path / 'opt.yml', {'name': 'x', 'network_g': dict(TINY_COMPACT), 'path': {}})
    with pytest.raises(ValueError, match=r"opt\.yml.*path\.pretrain_network_g"):
        load_generator(no_weights)
    with pytest.raises(ValueError, match=r"--network: .*'RRDBNett' is not a registered arch"):
        load_generator(str(tmp_path / 'odd.pth'), network={'type': 'RRDBNett'}, network_option='--network')


def test_crafted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / 'pwned'
    torch.save({'params': {'conv.weight': torch.zeros(1)}, 'extra': Payload(str(marker))}, tmp_path / 'evil.pth')
    for load in (load_generator, load_segmenter):
        with pytest.raises(ValueError, match=r"'.*evil\.pth' is not a readable checkpoint.*weights_only"):
            load(str(tmp_path / 'evil.pth'))
    assert not marker.exists()
    with open(tmp_path / 'evil.pth', 'rb') as f:  # the payload is live: a plain unpickler would have run it
        torch.load(f, weights_only=False)
    assert marker.exists()


def test_task_checkpoint_records_its_network_and_loaders_ignore_it(tmp_path):
    from basicsr.models.base_model import BaseModel

    from segsr.weights import load_checkpoint

    torch.manual_seed(0)
    net = build_network(dict(TINY_UNET)).eval()
    model = BaseModel.__new__(BaseModel)  # only what save_network / load_network read
    model.opt = {'path': {'models': str(tmp_path)}, 'rank': 0}
    save_network(model, net, 'net_task', -1, network=TINY_UNET)
    path = str(tmp_path / 'net_task_latest.pth')
    assert torch.load(path, weights_only=True)['network'] == TINY_UNET
    seg = load_segmenter(path)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert seg.arch == 'SegUNet' and seg.scale == 1 and torch.equal(seg(x), net(x)['out'])
    for loader in (lambda n: load_checkpoint(n, path, 'params'), lambda n: BaseModel.load_network(model, n, path)):
        fresh = build_network(dict(TINY_UNET))
        loader(fresh)
        assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))
    torch.save({'params': net.state_dict()}, tmp_path / 'plain.pth')
    with pytest.raises(ValueError, match=r"plain\.pth' does not record its network block.*--seg-network"):
        load_segmenter(str(tmp_path / 'plain.pth'))
    assert load_segmenter(str(tmp_path / 'plain.pth'), network=dict(TINY_UNET)).net.num_classes == TINY_UNET[
        'num_classes']


def test_evaluate_scores_a_checkpoint_without_network_g(tmp_path):
    from segsr.evaluate import build_method, check_methods

    net = training_checkpoint(TINY_COMPACT, tmp_path / 'public.pth')
    method = {'name': 'public', 'type': 'generator', 'path': str(tmp_path / 'public.pth')}
    check_methods([method], 'cfg.yml', {})
    lq, gt = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(build_method(method, torch.device('cpu'))(lq, gt), net(lq))


def test_the_network_never_modifies_the_callers_tensor():
    from segsr.utils.model_io import LoadedNetwork

    class InPlace(torch.nn.Module):  # what spandrel's RCAN does: x *= rgb_range
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(255.0))

        def forward(self, x):
            x *= self.scale
            return x / self.scale

    x = torch.rand(1, 3, 8, 8)
    before = x.clone()
    with torch.no_grad():
        out = LoadedNetwork(net=InPlace(), scale=1, arch='InPlace', source='test')(x)
    assert torch.equal(x, before) and torch.allclose(out, before)
