"""The recipe schema: one pydantic model per section, pure pydantic (no TensorFlow, no Keras).

A recipe has these sections::

    model:      {name: simple_cnn, filters: [32, 64]}   # registry name + constructor arguments
    data:       {source: digits, image_size: 16}
    training:   {epochs: 10, batch_size: 64, optimizer: {name: adam, learning_rate: 0.001}}
    run:        {name: quickstart, seed: 0, output_dir: runs}
    distribute: {strategy: mirrored}                     # optional
    method:     {name: fixmatch, threshold: 0.95}        # optional (kerasdl.methods.params)

Unknown keys are forbidden and types strict, so a typo or a wrong type stops the run before any
work (:func:`kerasdl.config.validate_recipe` says so in one line). ``model:`` is checked against the
registry's constructor arguments (:mod:`kerasdl.config.manifest`), ``method:`` by
:mod:`kerasdl.methods.params` and ``data.augment`` by :mod:`kerasdl.data.augment_specs`, all
without importing TensorFlow. ``RecipeConfig.dump_yaml`` writes the resolved recipe that
``kerasdl train`` accepts back to repeat a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kerasdl.config.errors import check_finite
from kerasdl.config.manifest import accepted_arguments
from kerasdl.config.names import check_name
from kerasdl.errors import UserError, suggest
from kerasdl.io import write_yaml

PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
# the seeds numpy's and scikit-learn's generators take
MAX_SEED = 2**32 - 1


class Section(BaseModel):
    """Base for recipe sections: unknown keys are errors, types are strict, numbers finite (an
    infinite or NaN learning rate, weight decay or std would train to NaN without a word)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False
    )


class InitConfig(Section):
    """``model.init``: re-initialize every kernel by name (see kerasdl.training.initializers)."""

    name: Literal[
        "he_normal",
        "he_uniform",
        "glorot_normal",
        "glorot_uniform",
        "kaiming_normal",
        "kaiming_uniform",
        "xavier_normal",
        "xavier_uniform",
    ]
    mode: Literal["fan_in", "fan_out"] = "fan_in"


class ModelConfig(BaseModel):
    """``model:``: a registry name plus the model's constructor arguments.

    ``num_classes`` and ``input_shape`` default to the data's; every other key must be an
    argument of the registered model's constructor.
    """

    model_config = ConfigDict(extra="allow")

    name: str = "simple_cnn"
    init_from: str | None = None
    init: InitConfig | None = None
    # a torchvision / timm checkpoint (.safetensors, .pth) or Keras weights file to start from:
    # create_model(name, weights=...) (kerasdl.weights)
    weights: str | None = None

    def kwargs(self) -> dict[str, Any]:
        """The constructor arguments (everything but ``name``, ``init_from``, ``init`` and
        ``weights``)."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_model(self) -> ModelConfig:
        accepted = [a for a in accepted_arguments(self.name) if a != "name"]  # name: the registry's
        for key, value in self.kwargs().items():
            if key not in accepted:
                raise UserError(
                    f"model.{key}: not an argument of model {self.name!r}."
                    + suggest(key, sorted(accepted))
                )
            check_finite(value, f"model.{key}")
        return self


class SyntheticConfig(Section):
    """Random tensors for benchmarks: ``num_examples`` images of the data's size and channels."""

    num_examples: PositiveInt = 1024
    num_classes: PositiveInt = 10


class SplitsConfig(Section):
    """``data.splits``: the tensorflow-datasets split (slicing allowed) behind each of kerasdl's
    splits, e.g. ``{train: "train[:90%]", val: "train[90%:]", test: test}``; a split left out
    is not used (no ``test``: final metrics on ``val``)."""

    train: str = "train"
    val: str | None = None
    test: str | None = None


Pair = Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=2, max_length=2)]


class CropConfig(Section):
    """``data.crop``: how an image of any size becomes ``image_size``, per image, as it is
    decoded (before batching).

    ``resize`` stretches the whole image (the default; right for fixed-size data sets such as
    CIFAR); ``random_resized`` is the Inception / torchvision ``RandomResizedCrop`` (a random
    window of ``scale`` x the area and aspect ratio in ``ratio``, log-uniform, resized; Szegedy
    et al. 2015); ``center`` is torchvision's evaluation crop: the shorter side resized to
    ``image_size / crop_fraction`` (224 / 0.875 = 256), then the central ``image_size`` window.
    """

    train: Literal["resize", "random_resized", "center"] = "resize"
    eval: Literal["resize", "center"] = "resize"
    scale: Pair = [0.08, 1.0]
    ratio: Pair = [3.0 / 4.0, 4.0 / 3.0]
    crop_fraction: Annotated[float, Field(gt=0, le=1)] = 0.875

    @model_validator(mode="after")
    def _ranges(self) -> CropConfig:
        if not (self.scale[0] <= self.scale[1] <= 1.0 and self.ratio[0] <= self.ratio[1]):
            raise ValueError(
                "data.crop: scale must be [min, max] with 0 < min <= max <= 1 and ratio "
                f"[min, max] with 0 < min <= max. Received: scale {self.scale}, ratio "
                f"{self.ratio}"
            )
        return self


class DataConfig(Section):
    """``data:``: where the images come from and how they are prepared.

    Sources: ``digits`` (scikit-learn's bundled 8x8 handwritten digits, 1,797 images), ``tfds``
    (a tensorflow-datasets name read from ``data_dir``; downloads only with ``download: true``),
    ``folder`` (one sub-folder per class under ``path``), ``npz`` (arrays ``x_train``,
    ``y_train`` and optionally ``x_val``/``y_val``/``x_test``/``y_test`` in ``path``),
    ``synthetic`` (random tensors).

    ``tfds`` and ``folder`` stream: images are read and decoded in parallel as training consumes
    them (kerasdl.data.decode). ``cache`` keeps the decoded, resized examples in memory after the
    first pass: ``true``, ``false``, or unset (auto: on for the in-memory sources, and for a
    streamed split whose decoded size is known and at most 2 GiB with no random crop).
    """

    source: Literal["digits", "tfds", "folder", "npz", "synthetic"] = "digits"
    name: str | None = None
    path: str | None = None
    data_dir: str | None = None
    download: bool = False
    image_size: list[PositiveInt] | PositiveInt | None = None
    channels: Literal[1, 3] | None = None
    val_split: Fraction = 0.1
    test_split: Fraction = 0.2
    mean: list[float] = []
    std: list[Annotated[float, Field(gt=0)]] = []
    splits: SplitsConfig | None = None
    crop: CropConfig = CropConfig()
    # the resize filter (antialiased), in training and in the exported serving signature:
    # bilinear (torchvision's default) or bicubic (timm's DeiT / ViT and EfficientNet transforms)
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    cache: bool | None = None
    shuffle_buffer: PositiveInt = 10_000
    on_corrupt: Literal["skip", "error"] = "skip"
    # folder: decode every file once (in parallel, nothing kept) before training, so that a
    # corrupt file is reported before the first epoch; false: corrupt files met while training
    # are skipped (on_corrupt: skip) or stop the run (on_corrupt: error)
    verify_images: bool = True
    augment: list[dict[str, Any]] = []
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: Any) -> Any:
        if isinstance(v, list) and len(v) != 2:
            raise ValueError(f"Expected an int or [height, width]. Received: {v}")
        return v

    @field_validator("augment")
    @classmethod
    def _augment(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not v:
            return v
        from kerasdl.data.augment_specs import validate_augment

        return validate_augment(v)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.source == "tfds" and not self.name:
            raise ValueError("data.source 'tfds' needs data.name (a tensorflow-datasets name)")
        if self.source in ("folder", "npz") and not self.path:
            raise ValueError(f"data.source {self.source!r} needs data.path")
        if len(self.mean) != len(self.std):
            raise ValueError("data.mean and data.std must have the same length")
        channels = self.known_channels()
        if len(self.mean) > 1 and channels is not None and len(self.mean) != channels:
            given = f"data.channels {channels}" if self.channels else f"data.source {self.source!r}"
            raise ValueError(
                f"data.mean and data.std need one value per channel (or one for all): "
                f"{len(self.mean)} given for {channels} channel{'s' if channels > 1 else ''} "
                f"({given})"
            )
        if self.val_split + self.test_split >= 1.0:
            raise ValueError("data.val_split + data.test_split must be below 1")
        if self.splits is not None and self.source != "tfds":
            raise ValueError(
                f"data.splits names tensorflow-datasets splits; data.source {self.source!r} "
                "splits by data.val_split and data.test_split"
            )
        cropped = (self.crop.train, self.crop.eval) != ("resize", "resize")
        if cropped and self.source not in ("tfds", "folder"):
            raise ValueError(
                f"data.crop applies to the streamed sources (tfds, folder), whose images are "
                f"decoded one by one; data.source {self.source!r} is resized as a whole"
            )
        if self.cache and self.crop.train == "random_resized":
            raise ValueError(
                "data.cache: true would keep the first pass's random crops "
                "(data.crop.train 'random_resized'); leave data.cache unset or false"
            )
        if self.crop.train != "resize" and self.image_size is None:
            raise ValueError(f"data.crop.train {self.crop.train!r} needs data.image_size")
        return self

    def known_channels(self) -> int | None:
        """The channels of the model's input when known before reading data: ``channels``, else
        the source's own (digits: 1, synthetic: 3); ``None`` for files read later (tfds, folder,
        npz)."""
        return self.channels or {"digits": 1, "synthetic": 3}.get(self.source)

    def size_tuple(self) -> tuple[int, int] | None:
        if self.image_size is None:
            return None
        if isinstance(self.image_size, int):
            return (self.image_size, self.image_size)
        return (self.image_size[0], self.image_size[1])


class OptimizerConfig(Section):
    """``training.optimizer``: name and hyper-parameters (see kerasdl.training.optimizers)."""

    name: Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "lars"] = (
        "adam"
    )
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    # unset: 0.9 for momentum / nesterov, none for rmsprop (Keras's and PyTorch's default)
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = None
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    # variables weight_decay skips: biases, normalisation scales and offsets, ViT's class token
    # and position embedding (timm's and torchvision's recipes: [bias, norm, embedding])
    decay_exclude: list[Literal["bias", "norm", "embedding"]] = []
    beta_1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta_2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    rho: Annotated[float, Field(ge=0, lt=1)] = 0.9
    epsilon: Annotated[float, Field(gt=0)] = 1e-7
    initial_accumulator_value: Annotated[float, Field(ge=0)] = 0.1
    trust_coefficient: Annotated[float, Field(gt=0)] = 0.001  # LARS's eta
    clipnorm: Annotated[float, Field(gt=0)] | None = None
    global_clipnorm: Annotated[float, Field(gt=0)] | None = None
    clipvalue: Annotated[float, Field(gt=0)] | None = None
    gradient_accumulation_steps: Annotated[int, Field(ge=2)] | None = None
    ema: bool = False
    ema_momentum: Annotated[float, Field(gt=0, lt=1)] = 0.99
    backbone_lr_multiplier: Annotated[float, Field(ge=0)] = 1.0

    @model_validator(mode="after")
    def _lars_decay(self) -> OptimizerConfig:
        if self.name == "lars" and self.decay_exclude:
            raise ValueError(
                "training.optimizer.decay_exclude: LARS already leaves biases and norms (every "
                "one-dimensional variable) undecayed and unadapted; remove decay_exclude."
            )
        if self.name == "lars" and self.backbone_lr_multiplier != 1.0:
            raise ValueError(
                "training.optimizer.backbone_lr_multiplier: not available with LARS (its "
                "per-layer trust ratio already sets each layer's step); use 1.0 or another "
                "optimizer."
            )
        return self

    @model_validator(mode="after")
    def _one_clip(self) -> OptimizerConfig:
        given = [k for k in ("clipnorm", "global_clipnorm", "clipvalue") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(
                f"training.optimizer: set only one of clipnorm, global_clipnorm, clipvalue. "
                f"Received: {', '.join(given)}"
            )
        return self


class ScheduleConfig(Section):
    """``training.schedule``: learning-rate schedule (see kerasdl.training.schedules)."""

    # fixmatch_cosine: lr * cos(7 pi k / 16 K) over the run (Sohn et al. 2020)
    name: Literal[
        "constant", "step", "exponential", "cosine", "cosine_restarts", "fixmatch_cosine"
    ] = "constant"
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    step_epochs: list[PositiveInt] = []
    gamma: Annotated[float, Field(gt=0)] = 0.1
    decay_rate: Annotated[float, Field(gt=0)] = 0.96
    decay_epochs: Annotated[float, Field(gt=0)] = 1.0
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0
    restart_epochs: Annotated[float, Field(gt=0)] = 10.0
    t_mul: Annotated[float, Field(gt=0)] = 2.0
    m_mul: Annotated[float, Field(gt=0)] = 1.0


class LossConfig(Section):
    """``training.loss``: categorical cross-entropy on one-hot labels, with label smoothing."""

    name: Literal["categorical_crossentropy"] = "categorical_crossentropy"
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0


class LrScalingConfig(Section):
    """``training.lr_scaling``: rescale the learning rate for a global batch other than the one
    it was tuned for (``base_batch_size``): ``linear`` (Goyal et al. 2017) or ``sqrt``."""

    rule: Literal["none", "linear", "sqrt"] = "none"
    base_batch_size: PositiveInt | None = None


class TransferConfig(Section):
    """``training.transfer``: how a model started from ``model.init_from`` or ``model.weights``
    is trained (see kerasdl.training.transfer)."""

    strategy: Literal["full", "feature_extraction", "fine_tune", "gradual_unfreeze"] = "full"
    unfreeze_every: PositiveInt = 1
    stages: list[str] = []
    reuse_head: bool = False


AUTO_STEPS_PER_EXECUTION = 16


class TrainingConfig(Section):
    """``training:``: the loop's budget, optimizer, schedule, loss and metrics."""

    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    loss: LossConfig = LossConfig()
    metrics: list[Literal["accuracy", "top5"]] = ["accuracy"]
    monitor: str = "auto"
    early_stopping_patience: Annotated[int, Field(ge=0)] = 0
    # auto (kerasdl.training.auto, printed at the start of a run): mixed_bfloat16 on CPUs with
    # AVX-512 BF16 / AMX and GPUs of compute capability 8+ (float16 on 7.x), float32 otherwise
    # and for the perceptron / MLP
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16", "auto"] = "auto"
    # auto: 16 training steps per call of the compiled function (2.7x the quickstart model's
    # training throughput, benchmarks/README.md); 1 with log_grad_norm or tf.distribute
    steps_per_execution: PositiveInt | Literal["auto"] = "auto"
    # TensorFlow's inter-op pool (0: its default, one thread per core); auto: 1 for the families
    # measured faster with it (kerasdl bench --suite threads), else 0
    inter_op_threads: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    jit_compile: bool = False
    l1: Annotated[float, Field(ge=0)] = 0.0
    l2: Annotated[float, Field(ge=0)] = 0.0
    log_images: Annotated[int, Field(ge=0)] = 8
    lr_scaling: LrScalingConfig = LrScalingConfig()
    transfer: TransferConfig = TransferConfig()
    log_grad_norm: bool = False
    # rematerialisation (kerasdl.layers.remat.remat_blocks; keras.RematScope fails on the TF
    # backend with fit): recompute block activations in the backward pass instead of keeping them,
    # trading compute for memory; blocks with an active dropout / drop-path are skipped
    remat: bool = False

    def execution_steps(self, distributed: bool = False) -> int:
        """``steps_per_execution`` with ``auto`` resolved.

        16, or 1 when logging the gradient norm (per step) or under a distribution strategy
        (Keras 3.15's multi-step loop fails on finite datasets under tf.distribute).
        """
        if self.steps_per_execution == "auto":
            return 1 if self.log_grad_norm or distributed else AUTO_STEPS_PER_EXECUTION
        return self.steps_per_execution


class DistributeConfig(Section):
    """``distribute:``: data-parallel training (see kerasdl.training.distribute).

    ``training.batch_size`` is the global batch, split evenly over the replicas.
    """

    strategy: Literal["none", "mirrored", "multi_worker"] = "none"
    devices: list[str] = []
    logical_cpus: Annotated[int, Field(ge=0)] = 0
    sync_batchnorm: bool = False
    custom_loop: bool = False


class RunConfig(Section):
    """``run:``: where the run folder goes and the seed that makes it reproducible."""

    # one folder under output_dir (and the default name of kerasdl export): kerasdl.config.names
    name: str = "run"
    output_dir: str = "runs"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    id: str | None = None
    # TensorFlow op determinism, the training order seeded by (seed, epoch) and the random
    # generators saved with every backup: a run killed and resumed ends with the weights of an
    # uninterrupted one (supervised recipes).
    deterministic: bool = False

    @field_validator("name", "id")
    @classmethod
    def _one_folder(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None:
            check_name(v, f"run {info.field_name}")
        return v


class RecipeConfig(Section):
    """A whole recipe. Extra top-level sections are errors."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
    run: RunConfig = RunConfig()
    distribute: DistributeConfig = DistributeConfig()
    method: dict[str, Any] | None = None

    @field_validator("method")
    @classmethod
    def _method(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        check_finite(v, "method")
        from kerasdl.methods.params import validate_method

        return validate_method(v).model_dump(mode="json")

    @model_validator(mode="after")
    def _check_transfer(self) -> RecipeConfig:
        strategy = self.training.transfer.strategy
        if strategy != "full" and not (self.model.init_from or self.model.weights):
            raise ValueError(
                f"training.transfer.strategy {strategy!r} needs model.init_from (a run folder or "
                "a .keras file to start from) or model.weights (a torchvision / timm checkpoint)"
            )
        spe = self.training.steps_per_execution
        if spe != "auto" and spe > 1 and self.distribute.strategy != "none":
            raise ValueError(
                f"training.steps_per_execution {spe} is not supported with distribute.strategy "
                f"{self.distribute.strategy!r} (Keras's multi-step loop fails on finite datasets "
                "under tf.distribute); use auto or 1"
            )
        if self.run.deterministic and self.data.crop.train == "random_resized":
            raise ValueError(
                "run.deterministic: data.crop.train 'random_resized' draws its windows in parallel "
                "decoding threads, seeded per pass but not per epoch; use the batched "
                "random_resized_crop of data.augment for a bit-exact resume"
            )
        if self.run.deterministic and self.method:
            raise ValueError(
                "run.deterministic is supported for supervised recipes; a method: run keeps one "
                "data iterator across epochs, whose read-ahead position is not saved with backups"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain YAML-friendly data."""
        return self.model_dump(mode="json")

    def dump_yaml(self, path: str | Path) -> None:
        """Write the resolved recipe; ``kerasdl train path`` repeats the run."""
        write_yaml(path, self.to_dict())
