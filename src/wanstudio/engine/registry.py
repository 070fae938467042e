"""Model families as plugins: every object registered under the entry point group ``wanstudio.families``.

The built-in WAN 2.2 family is registered in this package's own metadata, the same way a third-party
package registers its family, so there is one path for both. An entry point names either a family object
or a class/factory that returns one when called without arguments.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from wanstudio.engine.family import ModelFamily
from wanstudio.errors import GenerationFailedError, ModelNotFoundError
from wanstudio.orchestrator.manifest import Model

ENTRY_POINT_GROUP = "wanstudio.families"

log = logging.getLogger("wanstudio.engine")

# Entry points that failed to load, by name, with the reason: reported when their family is asked for.
_BROKEN: dict[str, str] = {}


@lru_cache(maxsize=1)
def load_families() -> dict[str, ModelFamily]:
    """Every installed family by name. A plugin that fails to load is logged and left out, so that one
    broken package does not take the others down; asking for its family then names the failure."""
    from importlib.metadata import entry_points

    families: dict[str, ModelFamily] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = entry.load()
            family = target() if isinstance(target, type) or not isinstance(target, ModelFamily) else target
        except Exception as exc:  # a plugin's own bug must not break the engine
            log.warning("model family plugin %s (%s) failed to load: %s", entry.name, entry.value, exc)
            _BROKEN[entry.name] = f"{entry.value}: {exc}"
            continue
        if not isinstance(family, ModelFamily):
            log.warning("model family plugin %s (%s) lacks spec/load/run; ignored", entry.name, entry.value)
            _BROKEN[entry.name] = f"{entry.value} does not implement spec, load and run"
            continue
        families.setdefault(family.name, family)
    return families



def family_for(model: Model) -> ModelFamily:
    """The family that runs `model`, or an error naming the installed families and what to install."""
    families = load_families()
    family = families.get(model.family)
    if family is not None:
        return family
    if model.family in _BROKEN:
        raise GenerationFailedError(
            f"the plugin for model family {model.family!r} (model {model.id}) failed to load: {_BROKEN[model.family]}",
            suggestions=["reinstall or update the package that provides this family", "run with -v to see the plugin's log"],
        )
    raise ModelNotFoundError(
        f"no installed model family {model.family!r} can run {model.id}; installed families: "
        f"{', '.join(sorted(families)) or 'none'}",
        suggestions=[
            f"install the package that registers the {model.family!r} family (entry point group {ENTRY_POINT_GROUP})",
            "see docs/adding-a-model-family.md",
        ],
    )
