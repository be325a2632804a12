"""Inference: the predictor (read -> resize, normalise -> network -> probabilities at
photo size -> post-process), the runtimes it can run on, cleaning, the confidence
gate and mask overlays. Never imports plotting, training or export code."""
