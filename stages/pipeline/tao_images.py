"""Which of TAO's two images runs a task (TAO 5 ships two: `...-tf1.15.5` for training, export and the
TensorRT converter, `...-deploy` for TAO Deploy's engine tasks): the one rule the docker runner
(tao_backend/runners.py) and the platform record (platform.py) both read. It imports nothing: the platform
probe reads it on every `dvc repro`."""

# TAO Deploy's DetectNet_v2 tasks (TAO 5+, `tao deploy detectnet_v2 ...`): they run in backend.images.deploy,
# every other task in backend.images.tf1
DEPLOY_TASKS = ("gen_trt_engine", "evaluate")


def image_key(task: str) -> str:
    """The key under backend.images of the image that runs DetectNet_v2's `task`: deploy or tf1."""
    return "deploy" if task in DEPLOY_TASKS else "tf1"
