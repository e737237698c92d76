"""Neural architecture search: DARTS (Liu, Simonyan & Yang, ICLR 2019).

* :mod:`kerasdl.nas.search_model`: the search network (mixed operations, cells, alphas).
* :mod:`kerasdl.nas.search`: :class:`~kerasdl.nas.search.DartsSearch`, the bilevel optimization
  as a ``keras.Model`` with its own ``train_step`` (first or second order).
* :mod:`kerasdl.nas.genotype`: genotypes, derivation from alphas, presets (``DARTS_V2``), JSON.
* :mod:`kerasdl.nas.plot`: cell drawings and alpha heat maps (matplotlib).
* :mod:`kerasdl.nas.config` / :mod:`kerasdl.nas.runner`: the search recipe and ``kerasdl search``.

The derived network is the registry model ``darts_net`` (:mod:`kerasdl.models.darts`).
See docs/darts.md.
"""
