"""Build the artifacts folder: a Triton model repository with weights, plus the classifiers.

`python -m export demo --out OUT [--seed N]`: small random models in the real on-disk formats.
`python -m export pretrained --out OUT`: the published weights (needs network access to the hubs).
Both finish by loading what they wrote through the same loaders that serve it.
"""
