"""ProMedical Kit: hierarchical clinical rubrics, criteria-conditioned reward models and GRPO."""
import logging as _logging

__version__ = "0.1.0"

# Third-party log lines a user can do nothing about, silenced narrowly (by logger, never our own):
# torchao's "Failed to load ... .so" for GPU kernels on a CPU build, and torch's pytree notice about
# Enum registration done inside torchao. Set before those packages are imported.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
