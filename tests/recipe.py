"""The notebooks' recipe as package calls, to test the training machinery quickly.

The notebooks hold the recipes (`pcam train` executes them, tested in
test_notebooks.py). `pcam.models.build_model` and `set_phase` are proven
identical to the notebooks' own cells in test_recipe.py (model config, and per
phase the trainable weights and the frozen BatchNorm layers), so these tests
train the same model, phase by phase, the way the notebooks call the run.
"""

import keras

from pcam.models import build_model, set_phase
from pcam.train.session import set_seed_and_precision, start_run


def train(config, results, *, callbacks=(), verbose=0) -> dict:
    """Train `config` as the notebooks do (seed and precision, build, then per phase:
    set the trainable layers, compile, resume, fit with the run's callbacks), then
    finish; returns the record."""
    set_seed_and_precision(config)
    run = start_run(config, results=results, verbose=verbose)
    with run.scope():
        model = build_model(config.model, alpha=config.alpha, weights=config.weights,
                            head_units=config.head_units, dropout=config.dropout,
                            image_size=config.image_size, bn_momentum=config.bn_momentum)
    for phase in run.phases:
        set_phase(model, phase, finetune_layers=config.finetune_layers)
        with run.scope():
            model.compile(optimizer=keras.optimizers.Adam(run.learning_rate(phase)),
                          loss="binary_crossentropy", metrics=run.metrics())
        start = run.resume(model, phase)
        model.fit(run.train, validation_data=run.valid, epochs=run.end_epoch(phase),
                  initial_epoch=start, callbacks=run.callbacks(phase, *callbacks),
                  verbose=run.verbose)
    return run.finish()
