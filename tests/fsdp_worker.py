"""FSDP2 on the kit's reward model in CPU processes (gloo): run as
``python -m torch.distributed.run --nproc_per_node N tests/fsdp_worker.py OUT STEPS`` (or plainly, one process,
no sharding). Every decoder layer and the root are ``fully_shard``-ed; each step every process takes its
share of the step's prompts and the kit's own packed loss (``group_losses`` normalised by the whole step's
counts, ``rm_trainer.step_counts``, times the world size: FSDP averages the gradients); at the end the
full state dict is gathered and process 0 saves the adapter through PEFT (what ``_save_trained`` does
under FSDP). accelerate 1.15 maps FSDP on CPU to plain multi-CPU DDP, so the Trainer cannot run this
here; this worker proves the sharded forward, backward, optimizer step and save on the same model."""
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(out: str, steps: int) -> None:
    from promedical.core.data import load_candidates, load_split
    from promedical.reward.config import RMConfig
    from promedical.reward.pairs import build_datasets
    from promedical.reward.scorer import CriteriaRewardModel
    from promedical.reward.trainer import group_losses, step_counts
    from promedical.reward.training_data import training_groups

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world > 1:
        dist.init_process_group("gloo")
        rank = dist.get_rank()
    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", seed=0))
    dd, _ = build_datasets(load_split("bench"), load_candidates(n_prompts=2))
    groups = training_groups(list(dd["pairs"]), list(dd["pointwise"]), 3.0)
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        for layer in rm.model.base_model.model.model.layers:
            fully_shard(layer)
        fully_shard(rm.model)
    params = [p for p in rm.model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=5e-3, weight_decay=0.0)
    rm.model.train()
    losses = []
    for _ in range(steps):
        counts = step_counts(groups)
        terms = group_losses(rm, groups[rank::world], rm.model)
        loss = sum(terms[n] * world / counts[n] for n in counts if counts[n])
        loss.backward()
        optim.step()
        optim.zero_grad()
        whole = loss.detach().clone()
        if world > 1:
            dist.all_reduce(whole)  # the shares add up to world x the step's loss
            whole /= world
        losses.append(float(whole))
    state = None
    if world > 1:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(rm.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        sharded = sum(type(p).__name__ == "DTensor" for p in params)
    if rank == 0:
        rm.model.save_pretrained(out, state_dict=state)
        Path(out, "worker.json").write_text(json.dumps(
            {"world": world, "losses": losses, "dtensor_params": sharded if world > 1 else 0, "params": len(params)}))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
