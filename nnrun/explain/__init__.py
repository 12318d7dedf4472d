"""Interpretation: explainers (Grad-CAM, Grad-CAM++, integrated gradients, SmoothGrad, input
gradients), their checks (pointing game, randomisation test) and `nnrun explain`. Token-sequence
models are explained per token over their token embedding (tokens.py).

Each explainer module registers itself under the registry kind "explainer" and imports
TensorFlow only inside functions, so `nnrun components explainer` stays fast.
"""
