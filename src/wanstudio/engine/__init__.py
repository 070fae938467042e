"""The generation engine: model families as plugins, parameter validation, pipelines, progress, MP4."""

from wanstudio.engine.engine import Engine, GenerationMetrics, GenerationResult, PreparedJob
from wanstudio.engine.family import Defaults, GenerationParams, Limits, ModelFamily, ModelSpec, Placement
from wanstudio.engine.info import Recommendation, model_info, recommend
from wanstudio.engine.params import GenerationRequest
from wanstudio.engine.progress import CancelToken, GenerationProgress

__all__ = [
    "CancelToken",
    "Defaults",
    "Engine",
    "GenerationMetrics",
    "GenerationParams",
    "GenerationProgress",
    "GenerationRequest",
    "GenerationResult",
    "Limits",
    "ModelFamily",
    "ModelSpec",
    "Placement",
    "PreparedJob",
    "Recommendation",
    "model_info",
    "recommend",
]
