"""Triton Python-backend models: each file is copied into the repository as `<model>/1/model.py` and
runs inside Triton's Python stub, in the project's venv (EXECUTION_ENV_PATH); Triton's own
`triton_python_backend_utils` exists only there, so each imports it when Triton starts the model."""
