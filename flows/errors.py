"""The error every flows module raises when the pipeline definition is wrong."""
from __future__ import annotations

from hicom.core.errors import ConfigError


class PipelineError(ConfigError):
    """The pipeline definition (dvc.yaml, `pipeline:` params, a variant) is wrong; the message names what."""
