"""Training: the loop (``trainer``) over its assembly from the config (``assembly``) and the state
a checkpoint carries for exact resume (``resume``), checkpoint files (``checkpoint``), DDP set-up
(``distributed``), model averaging (``average``) and the training plot (``plot``).

Kept empty of imports on purpose: ``kospeech decode`` imports ``kospeech.train.checkpoint``
without paying for the trainer, and the registry never needs this package.
"""
