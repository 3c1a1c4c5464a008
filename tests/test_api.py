"""The public API: clear errors on bad input, no mutation of the caller's tensors, nn.Module losses,
backend selection, and the pure-PyTorch path when the extension is absent."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import uda_ops
from conftest import OP_IDS, OPS, logits, requires_ext

Z = torch.randn(2, 5, 3, 4)


@pytest.mark.parametrize("call,exc,words", [
    (lambda: uda_ops.sym_kl(Z, torch.randn(2, 5, 3, 3)), ValueError, ["`a`", "`b`", "(2, 5, 3, 4)", "(2, 5, 3, 3)"]),
    (lambda: uda_ops.sym_kl(Z, Z.double()), TypeError, ["dtype", "torch.float64"]),
    (lambda: uda_ops.kl_div(Z, Z.to("meta")), ValueError, ["device", "meta"]),
    (lambda: uda_ops.entropy(Z.long()), TypeError, ["`z`", "torch.int64"]),
    (lambda: uda_ops.entropy([1.0, 2.0]), TypeError, ["`z`", "Tensor", "list"]),
    (lambda: uda_ops.entropy(Z, dim=4), ValueError, ["dim=4", "(2, 5, 3, 4)"]),
    (lambda: uda_ops.entropy(Z, dim=1.0), TypeError, ["`dim`", "float"]),
    (lambda: uda_ops.entropy(torch.randn(2, 1, 3)), ValueError, ["at least 2 classes"]),
    (lambda: uda_ops.entropy(torch.tensor(1.0)), ValueError, ["dim=1", "()"]),
    (lambda: uda_ops.entropy(Z, reduction="avg"), ValueError, ["`reduction`", "'avg'"]),
    (lambda: uda_ops.self_information(Z, dim=-5), ValueError, ["dim=-5"]),
    (lambda: uda_ops.cosine_discrepancy(Z, Z.half()), TypeError, ["`z1`", "`z2`"]),
    (lambda: uda_ops.clan_adversarial_loss(torch.randn(2, 3, 3), Z, Z, 1.0), ValueError, ["`d`", "(2, 3, 4)"]),
    (lambda: uda_ops.clan_adversarial_loss(torch.randn(2, 3, 4), Z, Z, 2.0), ValueError, ["`target`", "[0.0, 1.0]"]),
    (lambda: uda_ops.clan_adversarial_loss(torch.randn(2, 3, 4), Z, Z, "1"), TypeError, ["`target`"]),
    (lambda: uda_ops.adversarial_dropout_mask(torch.randn(2, 3, 4), delta=0.1), ValueError, ["(N, U)", "(2, 3, 4)"]),
    (lambda: uda_ops.adversarial_dropout_mask(torch.randn(2, 4)), ValueError, ["exactly one", "delta", "max_flips"]),
    (lambda: uda_ops.adversarial_dropout_mask(torch.randn(2, 4), delta=0.1, max_flips=1), ValueError, ["exactly one"]),
    (lambda: uda_ops.adversarial_dropout_mask(torch.randn(2, 4), delta=1.5), ValueError, ["`delta`", "1.5"]),
    (lambda: uda_ops.adversarial_dropout_mask(torch.randn(2, 4), delta=-0.1), ValueError, ["`delta`"]),
    (lambda: uda_ops.adversarial_dropout_mask(torch.randn(2, 4), max_flips=-1), ValueError, ["`max_flips`"]),
    (lambda: uda_ops.adversarial_dropout_mask(torch.randn(2, 4), delta=0.5, base_mask=torch.full((2, 4), 0.5)),
     ValueError, ["`base_mask`", "0 and 1"]),
    (lambda: uda_ops.adversarial_dropout_mask(torch.randn(2, 4), delta=0.5, base_mask=torch.ones(3)),
     ValueError, ["`base_mask`", "(3,)", "(2, 4)"]),
    (lambda: uda_ops.channel_adversarial_dropout_mask(Z, torch.randn(2, 5, 3), delta=0.5), ValueError,
     ["`grad`", "`activation`"]),
    (lambda: uda_ops.class_ratio_prior_loss(Z, torch.ones(4) / 4), ValueError, ["`prior`", "(5,)"]),
    (lambda: uda_ops.entropy_ranking_loss(Z, ratio=2.0), ValueError, ["`ratio`"]),
    (lambda: uda_ops.weight_discrepancy_loss([torch.ones(3)], [torch.ones(4)]), ValueError, ["same", "3", "4"]),
    (lambda: uda_ops.set_backend("cuda-magic"), ValueError, ["backend", "cuda-magic"]),
    # NaN passes every range comparison; infinities are no weight or probability
    (lambda: uda_ops.adversarial_dropout_mask(torch.randn(2, 4), delta=float("nan")), ValueError, ["`delta`", "nan"]),
    (lambda: uda_ops.clan_adversarial_loss(torch.randn(2, 3, 4), Z, Z, float("nan")), ValueError, ["`target`"]),
    (lambda: uda_ops.clan_adversarial_loss(torch.randn(2, 3, 4), Z, Z, 1.0, lambda_local=float("inf")), ValueError,
     ["`lambda_local`", "finite"]),
    (lambda: uda_ops.clan_adversarial_loss(torch.randn(2, 3, 4), Z, Z, 1.0, epsilon=float("nan")), ValueError,
     ["`epsilon`"]),
    (lambda: uda_ops.entropy_ranking_loss(Z, ratio=float("nan")), ValueError, ["`ratio`"]),
    # the ranking and prior losses rank and average per sample: axis 0 is the batch, never the class axis
    (lambda: uda_ops.entropy_ranking_loss(torch.randn(5), dim=0), ValueError, ["batch", "dim=0"]),
    (lambda: uda_ops.class_ratio_prior_loss(torch.randn(5, 3), torch.ones(5) / 5, dim=0), ValueError,
     ["batch", "dim=0"]),
])
def test_bad_input_is_a_clear_error(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), f"{w!r} missing from: {info.value}"


@pytest.mark.parametrize("backend_name", ["auto", "reference"])
def test_flip_budget_past_the_units_flips_every_candidate(backend_name, backend):
    """max_flips beyond the row's units (even past int64) means every candidate unit, on every backend."""
    backend(backend_name)
    j = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    every = uda_ops.adversarial_dropout_mask(j, max_flips=6)
    for flips in (7, 2 ** 63 - 1, 10 ** 20):
        assert torch.equal(uda_ops.adversarial_dropout_mask(j, max_flips=flips), every)
    g, h = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    assert torch.equal(uda_ops.channel_adversarial_dropout_mask(g, h, max_flips=10 ** 20),
                       uda_ops.channel_adversarial_dropout_mask(g, h, max_flips=4))


@pytest.mark.parametrize("shape", [(0, 5, 3, 4), (2, 5, 0, 4)], ids=["no_samples", "no_pixels"])
def test_prior_and_ranking_losses_on_empty_inputs(shape):
    """No samples or no pixels: NaN (a mean over nothing), like the "mean" reductions, not a reshape error."""
    z = torch.randn(shape)
    assert torch.isnan(uda_ops.class_ratio_prior_loss(z, torch.ones(5) / 5))
    assert torch.isnan(uda_ops.entropy_ranking_loss(z))


@requires_ext
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_inputs_are_not_mutated(op):
    xs = [x.requires_grad_(True) for x in op.make((2, 7, 5, 6), torch.float32, layout="channels_last")]
    before = [x.detach().clone() for x in xs]
    out = op.fn(xs, 1)
    g = torch.ones_like(out)
    g0 = g.clone()
    out.backward(g)
    for x, b in zip(xs, before):
        assert torch.equal(x.detach(), b)
    assert torch.equal(g, g0)


@requires_ext
def test_nn_modules_match_functional():
    a, b = logits((2, 7, 4, 5), seed=1), logits((2, 7, 4, 5), seed=2)
    d = torch.randn(2, 1, 4, 5)
    N, F = uda_ops, uda_ops
    pairs = [
        (N.SymmetricKLLoss(reduction="sum")(a, b), F.sym_kl(a, b, reduction="sum")),
        (N.SymmetricKLLoss(detach_targets=True)(a, b), F.sym_kl(a, b)),
        (N.KLDivergenceLoss()(a, b), F.kl_div(a, b)),
        (N.EntropyLoss(reduction="none")(a), F.entropy(a, reduction="none")),
        (N.SelfInformation()(a), F.self_information(a)),
        (N.EntropyRankingLoss(0.2)(a), F.entropy_ranking_loss(a, 0.2)),
        (N.CosineDiscrepancy()(a, b), F.cosine_discrepancy(a, b)),
        (N.CLANAdversarialLoss(lambda_local=10, epsilon=0.2)(d, a, b, 0.0),
         F.clan_adversarial_loss(d, a, b, 0.0, 10, 0.2)),
        (N.ClassRatioPriorLoss.from_label_histogram(torch.arange(1, 8))(a),
         F.class_ratio_prior_loss(a, torch.arange(1, 8) / 28.0)),
    ]
    for m, f in pairs:
        torch.testing.assert_close(m, f)
    assert "reduction='sum'" in repr(N.SymmetricKLLoss(reduction="sum"))
    prior_loss = N.ClassRatioPriorLoss(torch.ones(7) / 7)
    assert "prior" in dict(prior_loss.named_buffers())


def test_backend_selection(backend):
    info = uda_ops.backend_info()
    assert set(info) >= {"backend", "extension", "ops", "torch"}
    assert set(info["ops"]) >= {"sym_kl", "entropy", "clan_adversarial", "adversarial_dropout_mask"}
    a, b = logits((2, 7, 4, 5), seed=1), logits((2, 7, 4, 5), seed=2)
    native = uda_ops.sym_kl(a, b)
    backend("reference")
    assert uda_ops.get_backend() == "reference"
    assert all(v["cpu"] == "reference" for v in uda_ops.backend_info()["ops"].values())
    torch.testing.assert_close(uda_ops.sym_kl(a, b), native)
    backend("native")
    if info["extension"]:
        assert all(v["cpu"] == "native" for v in uda_ops.backend_info()["ops"].values())
    else:
        with pytest.raises(RuntimeError, match="native"):
            uda_ops.sym_kl(a, b)


def _run(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          timeout=300)


def test_without_extension_warns_once_and_runs_everything():
    code = """
        import warnings
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import uda_ops
            import uda_ops.functional
        assert sum("eager PyTorch reference" in str(x.message) for x in w) == 1, [str(x.message) for x in w]
        import torch
        info = uda_ops.backend_info()
        assert info["extension"] is False and "UDA_OPS_DISABLE_EXTENSION" in info["extension_error"]
        a = torch.randn(2, 5, 3, 4, requires_grad=True); b = torch.randn(2, 5, 3, 4)
        d = torch.randn(2, 1, 3, 4)
        loss = (uda_ops.sym_kl(a, b) + uda_ops.kl_div(a, b) + uda_ops.entropy(a)
                + uda_ops.self_information(a).mean() + uda_ops.cosine_discrepancy(a, b).mean()
                + uda_ops.clan_adversarial_loss(d, a, b, 1.0))
        loss.backward()
        assert a.grad is not None and torch.isfinite(a.grad).all()
        m = uda_ops.adversarial_dropout_mask(torch.tensor([[-.5, .2, -.1, -.3, 0.]]), delta=0.4)
        assert torch.allclose(m, torch.tensor([[0, 5 / 3, 5 / 3, 0, 5 / 3]]))
        uda_ops.channel_adversarial_dropout_mask(torch.randn(2, 4, 3, 3), torch.rand(2, 4, 3, 3), delta=0.5)
        uda_ops.set_backend("native")
        try:
            uda_ops.entropy(a)
        except RuntimeError as e:
            assert "native" in str(e)
        else:
            raise AssertionError("native backend without an extension must raise")
        print("ok")
    """
    r = _run(code, UDA_OPS_DISABLE_EXTENSION="1")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_backend_from_environment():
    r = _run("import uda_ops; print(uda_ops.get_backend())", UDA_OPS_BACKEND="reference")
    assert r.returncode == 0 and r.stdout.strip() == "reference", r.stderr
    r = _run("import uda_ops", UDA_OPS_BACKEND="bogus")
    assert r.returncode != 0 and "bogus" in r.stderr
