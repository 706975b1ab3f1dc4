"""Serving the engine with NVIDIA Triton: the model repository the `triton` stage writes
(repository.py), the Python-backend models in it (models/, which run inside Triton and use
detectnet_v2's own pre- and post-processing), and the one place that starts a Triton server (server.py)."""
