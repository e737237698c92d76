"""Recipe keys of every training method in ``method:``: one pydantic model per method.

Pure pydantic (no TensorFlow or Keras import), so a recipe is validated before any heavy import.
The keys that configure the method's constructor take the constructor's defaults (a test checks
that they agree with the signatures); the others configure the method's data pipeline
(``_data_fields``) or its evaluation (``_eval_fields``). :func:`validate_method` checks a recipe's
section; :data:`PARAMS` maps a method name to its model (the classes are in
:data:`kerasdl.methods.METHODS`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kerasdl.config.errors import one_line
from kerasdl.errors import UserError

Prob = Annotated[float, Field(ge=0.0, le=1.0)]
Decay = Annotated[float, Field(ge=0.0, lt=1.0)]
Pos = Annotated[int, Field(gt=0)]
NonNeg = Annotated[float, Field(ge=0.0)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None  # numpy's range, as run.seed

    # fields that configure the data pipeline / the evaluation rather than the constructor
    _data_fields: tuple[str, ...] = ()
    _eval_fields: tuple[str, ...] = ()

    def method_kwargs(self) -> dict[str, Any]:
        skip = {"name", *self._data_fields, *self._eval_fields}
        return {k: v for k, v in self.model_dump().items() if k not in skip}

    def data_kwargs(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._data_fields}


class _SemiParams(_Params):
    labels_per_class: Pos = 10
    unlabelled: Literal["all", "rest"] = "all"
    flip: bool = True
    _data_fields = ("labels_per_class", "unlabelled", "flip")


class FixMatchParams(_SemiParams):
    """``method: {name: fixmatch, ...}`` (Sohn et al. 2020)."""

    name: Literal["fixmatch"] = "fixmatch"
    threshold: Prob = 0.95
    lambda_u: NonNeg = 1.0
    mu: Pos = 7
    ema_decay: Decay | None = 0.999
    ema_warmup: bool = True


class PiModelParams(_SemiParams):
    """``method: {name: pi_model, ...}`` (Laine & Aila 2017)."""

    name: Literal["pi_model"] = "pi_model"
    consistency_weight: NonNeg = 100.0
    rampup_steps: Annotated[int, Field(ge=0)] = 4000
    mu: Pos = 1
    _data_fields = ("labels_per_class", "unlabelled", "flip", "mu")


class MeanTeacherParams(_SemiParams):
    """``method: {name: mean_teacher, ...}`` (Tarvainen & Valpola 2017)."""

    name: Literal["mean_teacher"] = "mean_teacher"
    consistency_weight: NonNeg = 100.0
    rampup_steps: Annotated[int, Field(ge=0)] = 4000
    ema_decay: Decay = 0.999
    rampup_ema_decay: Decay = 0.99
    mu: Pos = 1
    _data_fields = ("labels_per_class", "unlabelled", "flip", "mu")


class PseudoLabelParams(_SemiParams):
    """``method: {name: pseudo_label, ...}`` (Lee 2013, thresholded)."""

    name: Literal["pseudo_label"] = "pseudo_label"
    weight: NonNeg = 3.0
    threshold: Prob = 0.95
    rampup_start: Annotated[int, Field(ge=0)] = 100
    rampup_end: Annotated[int, Field(ge=0)] = 600
    mu: Pos = 1
    _data_fields = ("labels_per_class", "unlabelled", "flip", "mu")


class _SelfParams(_Params):
    # evaluation stage after pretraining (kerasdl.methods.probes)
    probe_protocols: list[Literal["linear", "knn", "finetune"]] = ["linear", "knn"]
    probe_labels_per_class: Pos | None = None


class _ContrastiveParams(_SelfParams):
    projection_dim: Pos = 128
    hidden_dim: Pos | None = None
    crop_scale: tuple[Prob, Prob] = (0.08, 1.0)
    flip: bool = True
    jitter_strength: NonNeg = 0.5
    jitter_prob: Prob = 0.8
    grayscale_prob: Prob = 0.2
    blur_prob: Prob = 0.5
    _data_fields = (
        "crop_scale",
        "flip",
        "jitter_strength",
        "jitter_prob",
        "grayscale_prob",
        "blur_prob",
    )
    _eval_fields = ("probe_protocols", "probe_labels_per_class")


class SimCLRParams(_ContrastiveParams):
    """``method: {name: simclr, ...}`` (Chen et al. 2020)."""

    name: Literal["simclr"] = "simclr"
    temperature: Annotated[float, Field(gt=0.0)] = 0.5


class MoCoParams(_ContrastiveParams):
    """``method: {name: moco, ...}`` (He et al. 2020; Chen et al. 2020, MoCo v2)."""

    name: Literal["moco"] = "moco"
    queue_size: Pos = 65536
    momentum: Decay = 0.999
    temperature: Annotated[float, Field(gt=0.0)] = 0.2
    head_batch_norm: bool = False  # MoCo v3's BN head (Chen, Xie & He 2021), for ViTs


class MAEParams(_SelfParams):
    """``method: {name: mae, ...}`` (He et al. 2022). The encoder is the recipe's model, a
    registry Vision Transformer (``model: {name: vit_*, ...}``); these are the decoder, the
    masking and the loss."""

    name: Literal["mae"] = "mae"
    decoder_dim: Pos = 512
    decoder_depth: Pos = 8
    decoder_heads: Pos = 16
    mask_ratio: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.75
    norm_pix_loss: bool = False
    crop_scale: tuple[Prob, Prob] = (0.2, 1.0)
    flip: bool = True
    _data_fields = ("crop_scale", "flip")
    _eval_fields = ("probe_protocols", "probe_labels_per_class")


PARAMS: dict[str, type[_Params]] = {
    "pi_model": PiModelParams,
    "mean_teacher": MeanTeacherParams,
    "pseudo_label": PseudoLabelParams,
    "fixmatch": FixMatchParams,
    "simclr": SimCLRParams,
    "moco": MoCoParams,
    "mae": MAEParams,
}


def validate_method(section: dict[str, Any] | _Params) -> _Params:
    """Validate a recipe's ``method:`` section (``{"name": ..., **params}``).

    Raises:
        UserError: unknown method, unknown key or bad value, naming the key.
    """
    if isinstance(section, _Params):
        return section
    if not isinstance(section, dict) or "name" not in section:
        raise UserError(
            f"method: expected a mapping with a 'name' ({', '.join(sorted(PARAMS))}). "
            f"Received: {section!r}"
        )
    name = section["name"]
    if name not in PARAMS:
        raise UserError(f"Unknown method {name!r}. Expected one of: {', '.join(sorted(PARAMS))}.")
    model = PARAMS[name]
    try:
        return model(**section)
    except ValidationError as err:
        raise UserError(one_line(err, "method", model=model, owner=f"method {name!r}")) from None
