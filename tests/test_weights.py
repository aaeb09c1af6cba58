"""segsr.weights: one reader for .pth and .safetensors with one error type, and one checked loader."""
import re

import segsr  # noqa: F401  isort:skip  (must be imported before basicsr)
import pytest
import torch
from torch import nn

from helpers.models import Payload

from segsr.weights import frozen_eval, load_into, read_state_dict, read_weights

OPTION = 'path.pretrain_network_x'


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def _named(path) -> str:
    """Regex of an error naming the option and the file."""
    return rf"(?s)Option '{re.escape(OPTION)}'.*'{re.escape(str(path))}'"


def test_pth_and_safetensors_give_the_same_state(tmp_path):
    from safetensors.torch import save_file

    state = _net().state_dict()
    torch.save({'params': state}, tmp_path / 'w.pth')
    save_file(dict(state), str(tmp_path / 'w.safetensors'))
    from_pth = read_state_dict(str(tmp_path / 'w.pth'), OPTION)
    from_st = read_state_dict(str(tmp_path / 'w.safetensors'), OPTION)
    assert list(from_pth) == list(state) and from_pth.keys() == from_st.keys()
    assert all(torch.equal(from_pth[k], from_st[k]) and torch.equal(from_pth[k], state[k]) for k in state)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    load_into(net, from_st, str(tmp_path / 'w.safetensors'), OPTION)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def _truncated(path) -> None:
    torch.save({'params': _net().state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize('write', [
    lambda p: p.write_bytes(b''),
    _truncated,
    lambda p: p.write_text('not a checkpoint at all\n'),
    lambda p: torch.save({'params': {'w': torch.zeros(1)}, 'extra': Payload(f'{p}.ran')}, p),
    lambda p: p.with_suffix('.safetensors').write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a": 1'),
], ids=['empty', 'truncated', 'text', 'pickled_code', 'bad_safetensors'])
def test_every_bad_file_is_one_value_error_naming_option_and_file(tmp_path, write):
    path = tmp_path / 'w.pth'
    write(path)
    if not path.exists():  # the safetensors case
        path = path.with_suffix('.safetensors')
    with pytest.raises(ValueError, match=_named(path)):
        read_weights(str(path), OPTION)
    with pytest.raises(ValueError, match=_named(path)):  # the task networks' route too
        read_state_dict(str(path), OPTION, torchscript=True)
    assert not (tmp_path / 'w.pth.ran').exists()


def test_missing_file_names_option_and_file(tmp_path):
    path = tmp_path / 'nope.pth'
    with pytest.raises(FileNotFoundError, match=_named(path) + ' does not exist'):
        read_weights(str(path), OPTION)


def test_torchscript_archive_only_where_asked(tmp_path):
    net = _net().eval()
    path = tmp_path / 'scripted.pt'
    torch.jit.trace(net, torch.rand(1, 3, 8, 8)).save(str(path))
    with pytest.raises(ValueError, match=_named(path)):
        read_weights(str(path), OPTION)
    state = read_state_dict(str(path), OPTION, torchscript=True)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_load_into_names_the_misfit(tmp_path):
    state = _net().state_dict()
    state.pop('0.bias')
    state['extra'] = torch.zeros(1)
    state['1.weight'] = torch.zeros(5)
    with pytest.raises(ValueError, match=_named('w.pth') + r".*1 missing key, 1 unexpected key, 1 shape mismatch"):
        load_into(_net(), state, 'w.pth', OPTION)
    with pytest.raises(ValueError, match=r'size mismatch for \[1.weight: file \(5,\) vs net \(4,\)\]'):
        load_into(_net(), state, 'w.pth', OPTION, strict=False)  # shapes are checked either way
    del state['1.weight']
    net = _net()
    load_into(net, state, 'w.pth', OPTION, strict=False)
    assert torch.equal(net[0].weight, state['0.weight'])


def test_frozen_eval_restores_mode_and_flags():
    net = _net().train()
    net[0].bias.requires_grad_(False)
    with frozen_eval(net) as inner:
        assert inner is net and not net.training and not any(p.requires_grad for p in net.parameters())
    assert net.training and net[0].weight.requires_grad and not net[0].bias.requires_grad
