"""The model zoo: one module per family; importing this package registers every variant.

Each family module holds one model class, a :class:`~kerasdl.models.base.Classifier`, and its
``VARIANTS`` table (registry name -> constructor defaults) registered with
:func:`kerasdl.registry.register_variants`; a new family is one module plus one line here.
``kerasdl.create_model`` and ``list_models`` import this package on first use.
"""

from kerasdl.models import (  # noqa: F401 (importing a family registers its variants)
    alexnet,
    darts,
    densenet,
    efficientnet,
    googlenet,
    mlp,
    perceptron,
    resnet,
    resnet_cifar,
    simple_cnn,
    vgg,
    vit,
)
from kerasdl.models.base import Classifier, classifier_head, feature_extractor

__all__ = ["Classifier", "classifier_head", "feature_extractor"]
