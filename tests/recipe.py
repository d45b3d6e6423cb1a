"""A compact stand-in for the notebooks' recipe, to test the training machinery quickly.

The notebooks hold the real recipes (`pcam train` executes them, tested in
test_notebooks.py); these tests exercise `pcam.train.session` around a small
model with pcam's layer names, phase by phase, the way the notebooks call it.
"""

import keras

from pcam.models import build_model, get_backbone
from pcam.train.session import start_run


def train(config, results, *, callbacks=(), verbose=0) -> dict:
    """Train `config` as the notebooks do (build, then per phase: trainable, compile,
    fit with the run's callbacks), then finish; returns the record."""
    run = start_run(config, results=results, verbose=verbose)
    with run.scope():
        model = build_model(config.model, alpha=config.alpha, weights=config.weights,
                            head_units=config.head_units, dropout=config.dropout,
                            image_size=config.image_size)
    base = model.get_layer("backbone")
    if get_backbone(config.model).recipe == "scratch":  # as notebook 02 does
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = config.bn_momentum
    for phase in run.phases:
        base.trainable = phase != "head"
        with run.scope():
            model.compile(optimizer=keras.optimizers.Adam(run.learning_rate(phase)),
                          loss="binary_crossentropy", metrics=run.metrics())
        model.fit(run.train, validation_data=run.valid, epochs=run.end_epoch(phase),
                  initial_epoch=run.resume(model, phase),
                  callbacks=run.callbacks(phase, *callbacks), verbose=run.verbose)
    return run.finish()
