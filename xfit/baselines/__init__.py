"""Feed-forward baselines, one module per published method, one shared trainer.

* :mod:`.common`: config, footprints and lifting, labels by threshold, the checkpoint writer;
* :mod:`.registry`: every method's network (:data:`~xfit.baselines.registry.MODELS`), build and load;
* :mod:`.x2ct`: X2CT-CNN and X2CT-GAN (Ying et al., CVPR 2019);
* :mod:`.ear`: EAR (Tan et al.);
* :mod:`.transvert`: TransVert (Bayat et al., MICCAI 2020), shape and level, no CT;
* :mod:`.xctrsnet`: X-CTRSNet (Ge et al.), CT and segmentation;
* :mod:`.train`: the trainer (``xfit train-baseline``, torchrun);
* :mod:`.infer`: :func:`~xfit.baselines.infer.predict`;
* the click command ``train-baseline`` is in :mod:`xfit.cli.baselines`.

See ``docs/baselines.md`` and ``docs/baselines_part2.md``. Nothing is imported here, so ``import xfit`` stays light.
"""
