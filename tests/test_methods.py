"""uda_ops.methods: every method's step on (N, C) and (N, C, H, W) logits with tiny networks; which parameters
each update order touches."""
import copy

import pytest
import torch
from torch import nn

import uda_ops
from uda_ops import methods
from uda_ops.methods import Parts, match_grid

K = 3


class Head(nn.Module):
    """C with ``low`` (to the hidden units) and ``top``, dropout between (as the classification Classifier)."""

    def __init__(self, f, conv, p=0.5):
        super().__init__()
        lin = (lambda a, b: nn.Conv2d(a, b, 1)) if conv else nn.Linear
        self.l1, self.l2 = lin(f, 8), lin(8, K)
        self.drop = nn.Dropout2d(p) if conv else nn.Dropout(p)

    def low(self, h):
        return torch.relu(self.l1(h))

    def top(self, u):
        return self.l2(self.drop(u))

    def forward(self, h):
        return self.top(self.low(h))


class Score(nn.Module):
    """A critic with one score per sample, for vectors or maps."""

    def __init__(self, ch, conv):
        super().__init__()
        self.f = nn.Conv2d(ch, 1, 3, padding=1) if conv else nn.Linear(ch, 1)

    def forward(self, x):
        y = self.f(x)
        return y.flatten(1).mean(1, keepdim=True)


def make(method, conv, p=0.5, lr=0.05):
    torch.manual_seed(0)
    g = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()) if conv else nn.Sequential(nn.Linear(4, 6), nn.ReLU())
    c, c2 = Head(6, conv, p), Head(6, conv, p)
    disc = nn.Conv2d(K, 1, 3, stride=2, padding=1) if conv else nn.Linear(K, 1)  # a coarser map for segmentation
    sgd = lambda ps: torch.optim.SGD(list(ps), lr=lr)  # noqa: E731
    mods = {}
    params = list(g.parameters()) + list(c.parameters())
    if method == "i2i":
        ch = 3 if conv else 4
        mods = dict(dec_s=nn.Conv2d(6, 3, 1) if conv else nn.Linear(6, 4),
                    dec_t=nn.Conv2d(6, 3, 1) if conv else nn.Linear(6, 4),
                    d_z=Score(6, conv), d_s=Score(ch, conv), d_t=Score(ch, conv))
        params += list(mods["dec_s"].parameters()) + list(mods["dec_t"].parameters())
    if method == "clan":
        params += list(c2.parameters())
    discs = [disc] if method in ("advent", "clan") else []
    crit = [p for k in ("d_z", "d_s", "d_t") if k in mods for p in mods[k].parameters()]
    opt_d = [sgd(disc.parameters())] if discs else ([sgd(crit)] if crit else [])
    parts = Parts(g=g, c=c, c2=c2 if method in ("clan", "adr") else None, discs=discs, opt=sgd(params),
                  opt_g=sgd(g.parameters()), opt_c=sgd(list(c.parameters()) + list(c2.parameters())),
                  opt_d=opt_d, modules=mods, generator=torch.Generator().manual_seed(1))
    return parts


def batch(conv, n=4):
    gen = torch.Generator().manual_seed(2)
    if conv:
        xs, xt = torch.randn(n, 3, 8, 8, generator=gen), torch.randn(n, 3, 8, 8, generator=gen) + 1
        ys = torch.randint(K, (n, 8, 8), generator=gen)
        ys[0, 0, :3] = 255  # void pixels
    else:
        xs, xt = torch.randn(n, 4, generator=gen), torch.randn(n, 4, generator=gen) + 1
        ys = torch.randint(K, (n,), generator=gen)
    return xs, ys, xt


def snap(m):
    return [p.detach().clone() for p in m.parameters()]


def changed(m, before):
    return any(not torch.equal(a, b) for a, b in zip(m.parameters(), before))


HYPER = {
    "minent": dict(lambda_ent=1.0, entropy_ranking=0.5, class_prior_mu=0.5, lambda_cp=1.0,
                   prior=torch.tensor([0.5, 0.3, 0.2])),
    "advent": dict(lambda_adv=1.0),
    "clan": dict(lambda_adv=1.0, iters=10),
    "adr": dict(n_gen=2),
    "dta": dict(delta_c=0.5, delta_e=0.5, ramp_epochs=0, vat_eps=0.5),
    "i2i": dict(),
}


@pytest.mark.parametrize("conv", [False, True], ids=["NC", "NCHW"])
@pytest.mark.parametrize("name", methods.NAMES)
def test_step_runs_and_updates(name, conv):
    m = methods.get(name)
    parts = make(name, conv)
    hp = m.Hyper(**HYPER.get(name, {}))
    if name == "dta" and conv:
        hp.cdta = False
    before = {k: snap(v) for k, v in dict(g=parts.g, c=parts.c, c2=parts.c2 or nn.Identity(),
                                           **{f"d{i}": d for i, d in enumerate(parts.discs)},
                                           **parts.modules).items()}
    losses = m.step(parts, hp, *batch(conv), it=3)
    assert losses and all(isinstance(v, float) and v == v for v in losses.values()), losses
    assert changed(parts.g, before["g"]), name
    assert changed(parts.c, before["c"])
    if name in ("clan", "adr"):
        assert changed(parts.c2, before["c2"])
    for i, d in enumerate(parts.discs):
        assert changed(d, before[f"d{i}"])
    for k, v in parts.modules.items():
        assert changed(v, before[k]), k


@pytest.mark.parametrize("conv", [False, True], ids=["NC", "NCHW"])
def test_adr_generator_steps_leave_c_alone(conv):
    """Step 3 updates G only: C and C' end the same whatever n_gen, G does not."""
    res = []
    for n_gen in (0, 3):
        parts = make("adr", conv)
        torch.manual_seed(5)
        methods.get("adr").step(parts, methods.get("adr").Hyper(n_gen=n_gen), *batch(conv))
        res.append((snap(parts.g), snap(parts.c), snap(parts.c2)))
    (g0, c0, c20), (g3, c3, c23) = res
    assert all(torch.equal(a, b) for a, b in zip(c0, c3))
    assert all(torch.equal(a, b) for a, b in zip(c20, c23))
    assert any(not torch.equal(a, b) for a, b in zip(g0, g3))


@pytest.mark.parametrize("conv", [False, True], ids=["NC", "NCHW"])
def test_adr_c_prime_never_reaches_g(conv):
    """C' learns on detached features: with C frozen (lr 0) and n_gen = 0, G moves by C's source loss alone."""
    parts = make("adr", conv, p=0.0)
    for grp in parts.opt_c.param_groups:
        grp["lr"] = 0.0
    ref = copy.deepcopy(parts.g)
    xs, ys, xt = batch(conv)
    methods.get("adr").step(parts, methods.get("adr").Hyper(n_gen=0), xs, ys, xt)
    f = ref(torch.cat([xs, xt]))[:len(xs)]
    loss = parts.sup_loss(parts.c(f), ys)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    for p, q, gr in zip(parts.g.parameters(), ref.parameters(), grads):
        torch.testing.assert_close(p, q - 0.05 * gr)


@pytest.mark.parametrize("conv", [False, True], ids=["NC", "NCHW"])
@pytest.mark.parametrize("name", ["advent", "clan"])
def test_discriminator_gets_no_generator_gradient(name, conv):
    """The discriminator's gradient is its own loss's on detached inputs: the generator's adversarial term
    (computed with D frozen) adds nothing to it."""
    parts = make(name, conv, p=0.0)
    for grp in parts.opt.param_groups:
        grp["lr"] = 0.0  # g, c, c2 stay put, so the detached inputs can be recomputed
    d = parts.discs[0]
    d_ref = copy.deepcopy(d)
    xs, ys, xt = batch(conv)
    m = methods.get(name)
    hp = m.Hyper(**HYPER[name])
    m.step(parts, hp, xs, ys, xt, it=5)
    with torch.no_grad():
        if name == "advent":
            inp = torch.cat([uda_ops.self_information(parts.logits(xs)), uda_ops.self_information(parts.logits(xt))])
        else:
            z = lambda x: parts.c(parts.g(x)) + parts.c2(parts.g(x))  # noqa: E731
            inp = torch.cat([torch.softmax(z(xs), 1), torch.softmax(z(xt), 1)])
    out = d_ref(inp)
    n = len(xs)
    if name == "advent":
        lab = torch.cat([torch.zeros_like(out[:n]), torch.ones_like(out[n:])])
        loss = nn.functional.binary_cross_entropy_with_logits(out, lab)
    else:
        zt1, zt2 = parts.c(parts.g(xt)).detach(), parts.c2(parts.g(xt)).detach()
        zs1, zs2 = parts.c(parts.g(xs)).detach(), parts.c2(parts.g(xs)).detach()
        out = match_grid(out, zt1)
        loss = 0.5 * (uda_ops.clan_adversarial_loss(out[:n], zs1, zs2, target=0.0, lambda_local=0.0, epsilon=1.0)
                      + uda_ops.clan_adversarial_loss(out[n:], zt1, zt2, target=1.0, lambda_local=hp.lambda_local,
                                                      epsilon=hp.epsilon, detach_weight=True))
    grads = torch.autograd.grad(loss, list(d_ref.parameters()))
    for p, gr in zip(d.parameters(), grads):
        torch.testing.assert_close(p.grad, gr)


def test_i2i_zero_weights_switch_terms_and_critics_off():
    """Table 1 special cases: lambda_id alone (DRCN-style) trains no critic and logs no adversarial term."""
    parts = make("i2i", conv=True)
    hp = methods.get("i2i").Hyper(lambda_z=0, lambda_tr=0, lambda_cyc=0, lambda_trc=0)
    crit = {k: snap(parts.modules[k]) for k in ("d_z", "d_s", "d_t")}
    losses = methods.get("i2i").step(parts, hp, *batch(True))
    assert set(losses) == {"ce", "q_id"}
    assert not any(changed(parts.modules[k], crit[k]) for k in crit)


def test_match_grid():
    z = torch.zeros(2, K, 8, 8)
    assert match_grid(torch.zeros(2, 1, 4, 4), z).shape == (2, 1, 8, 8)
    assert match_grid(torch.zeros(2, 1), torch.zeros(2, K)).shape == (2, 1)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        methods.get("nope")


def test_adr_l1_sensitivity_bounded():
    """The ADR segmentation code's ``diff``: mean |softmax(z1) - softmax(z2)|, at most 2 / C however large
    the logits (the unbounded ``exact`` sym-KL grows with them)."""
    sens = methods.get("adr").sensitivity
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 5, 3, 4, generator=g)
    torch.testing.assert_close(sens(z1, z2, "l1"), (z1.softmax(1) - z2.softmax(1)).abs().mean())
    assert sens(z1, z1, "l1") == 0
    assert sens(1e4 * z1, 1e4 * z2, "l1") <= 2 / 5 + 1e-6
    assert sens(1e2 * z1, 1e2 * z2, "exact") > 10 * sens(z1, z2, "exact")


def test_hyper_fields_take_hyper_defaults_and_hyper_from_reads_them_back():
    """A flat config declared with hyper_fields: defaults from each Hyper unless given, a shared name sets
    every method that lists it, renamed fields land on the Hyper's own name, fixed values fill the rest."""
    import dataclasses
    Base = dataclasses.make_dataclass("Base", [("steps", int, 5)])
    Cfg = methods.with_hyper_fields(Base, {"dta": ("lambda_dta", "lambda_ent", ("ramp", "ramp_epochs", 3)),
                                           "minent": ("lambda_ent",),
                                           "i2i": (("i2i_gp", "gp"),)})
    assert [f.name for f in dataclasses.fields(Cfg)] == ["steps", "lambda_dta", "lambda_ent", "ramp", "i2i_gp"]
    cfg = Cfg()
    dta, minent, i2i = (methods.get(m).Hyper for m in ("dta", "minent", "i2i"))
    assert (cfg.lambda_dta, cfg.lambda_ent, cfg.ramp, cfg.i2i_gp) == (dta.lambda_dta, dta.lambda_ent, 3, i2i.gp)
    cfg = Cfg(lambda_dta=0.25, lambda_ent=0.5, ramp=7, i2i_gp=2.0)
    assert methods.hyper_from(cfg, "dta", steps_per_epoch=11) == dta(lambda_dta=0.25, lambda_ent=0.5,
                                                                     ramp_epochs=7, steps_per_epoch=11)
    assert methods.hyper_from(cfg, "minent") == minent(lambda_ent=0.5)
    assert methods.hyper_from(cfg, "i2i") == i2i(gp=2.0)
    assert methods.hyper_from(cfg, "source_only") == methods.get("source_only").Hyper()
    with pytest.raises(ValueError, match="fixed"):
        methods.hyper_from(cfg, "dta", lambda_dta=1.0)
    with pytest.raises(ValueError, match="no field"):
        methods.hyper_fields({"adr": ("lambda_dta",)})
    with pytest.raises(ValueError, match="again with a default"):
        methods.hyper_fields({"dta": ("lambda_ent",), "minent": (("lambda_ent", "lambda_ent", 1.0),)})
    Two = dataclasses.make_dataclass("Two", methods.hyper_fields({"dta": ("lambda_ent", ("ent", "lambda_ent"))}))
    with pytest.raises(ValueError, match="two config fields"):
        methods.hyper_from(Two(), "dta")
