"""A prelude for ``python -c`` that makes Lightning, Hydra and OmegaConf unimportable in that process, to
show that sslib's core and the plain-loop example never need them."""

from __future__ import annotations

FRAMEWORKS = ("lightning", "pytorch_lightning", "lightning_fabric", "hydra", "omegaconf")

WITHOUT_FRAMEWORKS = f"""
import importlib.abc, sys
BLOCKED = {FRAMEWORKS!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: the core must not import it")
        return None
sys.meta_path.insert(0, Blocker())
"""
