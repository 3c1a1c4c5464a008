"""Run under ``torchrun --nproc_per_node 2``: each segmentation trainer for a few iterations with DDP (gloo),
then check that every rank holds the same parameters (segmenter and discriminators). Used by
tests/test_segmentation.py::test_torchrun_two_processes."""
import sys

import torch
import torch.distributed as dist

from models.segmentation import distributed as D
from models.segmentation.train import make_config, run


def flat_params(tr):
    ps = [p.detach().reshape(-1) for p in tr.net.parameters()]
    for d in tr.discs:
        ps += [p.detach().reshape(-1) for p in d.parameters()]
    return torch.cat(ps)


def main():
    methods = sys.argv[1].split(",")
    torch.set_num_threads(1)
    for m in methods:
        cfg = make_config(m, "synthetic", iters=2, batch=2, n_source=8, n_target=8, n_val=4, progress=False,
                          threads=1, seed=3, save_images=0, adr_gen_steps=1)
        res = run(cfg)
        v = flat_params(res["trainer"])
        out = [torch.zeros_like(v) for _ in range(D.world())]
        dist.all_gather(out, v)
        diff = max((o - out[0]).abs().max().item() for o in out)
        if D.is_main():
            print(f"DDP-CHECK {m} world={D.world()} maxdiff={diff:.3g} miou={res['miou']:.4f}", flush=True)
    D.cleanup()


if __name__ == "__main__":
    main()
