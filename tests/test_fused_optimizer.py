"""The training loop's optimisers on CPU networks: fused Adam, the same updates as the plain one."""

import dnnlib
import pytest
import torch

from training import training_loop

pytestmark = pytest.mark.usefixtures("one_thread")


def test_adam_on_cpu_is_fused_and_updates_like_plain_adam():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LeakyReLU(0.2), torch.nn.Linear(5, 1))
    preset = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.01, betas=[0.0, 0.99], eps=1e-8)
    loss = dnnlib.EasyDict(phases=[dnnlib.EasyDict(module='G')])
    fused = training_loop.build_optimizers(loss, dict(G=net), dict(G=preset))['G']
    assert fused.defaults['fused'] is True
    twin = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LeakyReLU(0.2), torch.nn.Linear(5, 1))
    twin.load_state_dict(net.state_dict())
    plain = torch.optim.Adam(twin.parameters(), lr=0.01, betas=[0.0, 0.99], eps=1e-8)
    for step in range(5):
        x = torch.randn([8, 6], generator=torch.Generator().manual_seed(step))
        for model, opt in ((net, fused), (twin, plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    moved = [(a - b).abs().max() for a, b in zip(net.parameters(), twin.parameters())]
    assert max(moved) < 1e-6
    assert (net[0].weight - torch.nn.Linear(6, 5).weight).abs().max() > 0  # something happened at all
    plain.load_state_dict(fused.state_dict())  # resumable either way


def test_explicit_choice_and_other_optimisers_are_kept():
    net = torch.nn.Linear(3, 2)
    chosen = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=0.01, foreach=False)
    assert 'fused' not in training_loop.fused_on_cpu(chosen, net)
    sgd = dnnlib.EasyDict(class_name='torch.optim.SGD', lr=0.01)
    assert training_loop.fused_on_cpu(sgd, net) == sgd
