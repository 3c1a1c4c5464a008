"""torch.compile(fullgraph=True) on a small segmentation-style model using each loss: no graph break, and
the same loss and parameter gradients as eager."""
import pytest
import torch
from torch import nn

import uda_ops
from conftest import requires_ext

pytestmark = requires_ext


class TwoHeads(nn.Module):
    def __init__(self, c_in=3, classes=5):
        super().__init__()
        self.body = nn.Conv2d(c_in, 8, 3, padding=1)
        self.h1, self.h2 = nn.Conv2d(8, classes, 1), nn.Conv2d(8, classes, 1)
        self.disc = nn.Conv2d(classes, 1, 3, padding=1)

    def forward(self, x):
        f = torch.relu(self.body(x))
        return self.h1(f), self.h2(f)


LOSSES = {
    "sym_kl": lambda m, z1, z2: uda_ops.sym_kl(z1, z2),
    "kl_div": lambda m, z1, z2: uda_ops.kl_div(z1, z2, detach_target=True),
    "entropy": lambda m, z1, z2: uda_ops.entropy(z1),
    "self_information": lambda m, z1, z2: m.disc(uda_ops.self_information(z1)).mean(),
    "cosine_discrepancy": lambda m, z1, z2: uda_ops.cosine_discrepancy(z1, z2).mean(),
    "clan_adversarial": lambda m, z1, z2: uda_ops.clan_adversarial_loss(m.disc(z1.softmax(1)), z1, z2, 1.0),
    "entropy_ranking": lambda m, z1, z2: uda_ops.entropy_ranking_loss(z1, 0.5),
    "channel_mask": lambda m, z1, z2: (uda_ops.channel_adversarial_dropout_mask(z1, z2, delta=0.4)[:, :, None, None]
                                       * z1).mean(),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_compile_fullgraph_matches_eager(name):
    torch.manual_seed(0)
    model = TwoHeads()
    x = torch.randn(2, 3, 8, 12)
    loss_fn = LOSSES[name]

    def step(x):
        z1, z2 = model(x)
        return loss_fn(model, z1, z2)

    eager = step(x)
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, dynamic=False)(x)
    compiled.backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    grads_c = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(grads_c)
    for a, b in zip(grads_c, grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
