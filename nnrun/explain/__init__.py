"""Interpretation: explainers (Grad-CAM, Grad-CAM++, integrated gradients, SmoothGrad, input
gradients), their checks (pointing game, randomisation test) and `nnrun explain`.

Each explainer module registers itself under the registry kind "explainer" and imports
TensorFlow only inside functions, so `nnrun components explainer` stays fast.
"""
