"""Model families as plugins: every object registered under the entry point group ``wanstudio.families``.

The built-in WAN 2.2 family is registered in this package's own metadata, the same way a third-party
package registers its family, so there is one path for both. An entry point names either a family object
or a class/factory that returns one when called without arguments.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from wanstudio.engine.family import ModelFamily, ModelSpec
from wanstudio.errors import GenerationFailedError, ModelNotFoundError, WanError
from wanstudio.orchestrator.manifest import Model

ENTRY_POINT_GROUP = "wanstudio.families"

log = logging.getLogger("wanstudio.engine")

# Entry points that failed to load, by entry point name (by convention the family's name: a plugin that
# did not load cannot tell its family), with the reason; reported when that family is asked for.
_BROKEN: dict[str, str] = {}


@lru_cache(maxsize=1)
def load_families() -> dict[str, ModelFamily]:
    """Every installed family by name. A plugin that fails to load is logged and left out, so that one
    broken package does not take the others down; asking for its family then names the failure."""
    from importlib.metadata import entry_points

    _BROKEN.clear()
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
        if family.name in families:
            log.warning("two plugins claim model family %r; keeping the first, ignoring %s", family.name, entry.value)
            continue
        families[family.name] = family
    return families



def family_for(model: Model) -> ModelFamily:
    """The family that runs `model`, or an error naming the installed families and what to install.

    A LoRA entry of the manifest (``kind = "lora"``) is no video model: MODEL_NOT_FOUND says how to use it.
    Every caller that looks for generators (recommend, what_fits, the fallback, /v1/models) skips a model
    whose family raises, so this is the one place that keeps LoRAs out of them."""
    if model.is_lora:
        raise ModelNotFoundError(
            f"{model.id} is a LoRA (for {', '.join(model.base_models)}), not a video model: generate with one of "
            f"its base models and name it as a LoRA",
            param="model",
            suggestions=[f"wan generate --model {model.base_models[0]} --lora {model.id}",
                         f'POST /v1/videos with "model": "{model.base_models[0]}", "loras": [{{"name": "{model.id}"}}]'],
        )
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


def spec_of(family: ModelFamily, model: Model) -> ModelSpec:
    """The family's spec for `model`; a plugin's own failure becomes GENERATION_FAILED naming the plugin."""
    try:
        return family.spec(model)
    except WanError:
        raise
    except Exception as exc:
        raise GenerationFailedError(
            f"the {model.family!r} family plugin failed to describe {model.id}: {type(exc).__name__}: {exc}",
            suggestions=["update or reinstall the package that provides this family", "run with -v to see the plugin's log"],
        ) from exc
