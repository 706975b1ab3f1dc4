"""A stand-in for TAO's executables, installed on PATH by the tests under the names detectnet_v2,
tao-converter and docker (`docker run` as the tao_docker backend uses it, `docker exec` as the TAO
launcher does; the launcher itself is TAO's own code, see real_launcher.py). It records its argv and
environment to the JSON-lines file $FAKE_TAO_RECORD, writes the files TAO would write, echoes the key
as a careless tool might, and fails (after writing half an output) when $FAKE_TAO_FAIL names it.
`detectnet_v2 evaluate` reports the APs of $FAKE_TAO_AP (JSON {class: AP}; 0.5 for the others).
`nvidia-smi` lists the GPUs of $FAKE_GPUS (`name, compute capability` lines; one A100 by default), or
fails as a broken driver makes it when $FAKE_NVIDIA_SMI_FAIL is set; engines name the GPU they were
built on when $FAKE_GPUS is set, as real engines differ from one GPU to another."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def record(tool, args=None, **more):
    """One JSON line in $FAKE_TAO_RECORD: the tool, its argv, the environment the tests look at, and more."""
    entry = {"tool": tool, "argv": args,
             "env": {k: os.environ.get(k) for k in ("TAO_KEY", "MY_KEY", "LAUNCHER_MOUNTS")}, **more}
    with open(os.environ["FAKE_TAO_RECORD"], "a") as handle:
        handle.write(json.dumps(entry) + "\n")


DEFAULT_GPUS = "NVIDIA A100-SXM4-40GB, 8.0"


def engine_bytes():
    gpus = os.environ.get("FAKE_GPUS")
    return b"fake engine" + (f" built on {gpus}".encode() if gpus else b"")


def nvidia_smi(args):
    assert args == ["--query-gpu=name,compute_cap", "--format=csv,noheader"], args
    if os.environ.get("FAKE_NVIDIA_SMI_FAIL"):
        print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
        return 9
    print(os.environ.get("FAKE_GPUS", DEFAULT_GPUS))
    return 0


def option(args, flag):
    return args[args.index(flag) + 1] if flag in args else None


def to_host(args, mounts):
    """Container paths back to host paths, as the mounts make them appear."""
    out = []
    for arg in args:
        for source, destination in sorted(mounts, key=lambda m: len(m[1]), reverse=True):
            if arg == destination or arg.startswith(destination + "/"):
                arg = source + arg[len(destination):]
                break
        out.append(arg)
    return out


def tao_tool(tool, args):
    if os.environ.get("FAKE_TAO_FAIL") in (tool, f"{tool} {args[0] if args else ''}"):
        evaluating = tool == "detectnet_v2" and args[:1] == ["evaluate"]
        target = (str(Path(option(args, "-r")) / "results.json") if evaluating
                  else option(args, "-o") or option(args, "-e"))
        if target:
            Path(target).write_bytes(b"half written")
        print(f"[TAO] ERROR: {tool} failed: CUDA out of memory while building the network", file=sys.stderr)
        return 1
    print(f"[TAO] running {tool} {' '.join(args)}")
    key = option(args, "-k")
    if key:
        print(f"[TAO] decrypting with key {key}")
    if tool == "detectnet_v2" and args[0] == "calibration_tensorfile":
        import numpy

        from stages.formats.tensorfile import TensorFileWriter  # a real (tiny) TensorFile, as the stage checks it
        with TensorFileWriter(option(args, "-o")) as writer:
            writer.write(numpy.zeros((1, 3, 4, 4), numpy.float32))
    elif tool == "detectnet_v2" and args[0] == "export":
        out = Path(option(args, "-o"))
        shutil.copyfile(option(args, "-m"), out)  # the input is ONNX already
        if "--cal_cache_file" in args and not Path(option(args, "--cal_cache_file")).exists():
            # TensorRT's calibrators read an existing cache instead of calibrating
            Path(option(args, "--cal_cache_file")).write_text("TRT-8601-EntropyCalibration2\ninput_1: 3c010a14\n")
        if "--gen_ds_config" in args:
            config = f"net-scale-factor=0.00392156862745098\ntlt-model-key={key}\n"
            (out.parent / "nvinfer_config.txt").write_text(config)
            (out.parent / "labels.txt").write_text("car\ncyclist\npedestrian\n")
    elif tool == "detectnet_v2" and args[0] == "gen_trt_engine":
        Path(option(args, "--engine_file")).write_bytes(engine_bytes())
    elif tool == "detectnet_v2" and args[0] == "evaluate":  # TAO Deploy's results.json, AP per target class
        classes = re.findall(r'target_classes\s*\{\s*name:\s*"([^"]+)"', Path(option(args, "-e")).read_text())
        aps = json.loads(os.environ.get("FAKE_TAO_AP", "{}"))
        results = {f"AP_{name}": aps.get(name, 0.5) for name in classes}
        (Path(option(args, "-r")) / "results.json").write_text(json.dumps(results))
    elif tool == "tao-converter":
        Path(option(args, "-e")).write_bytes(engine_bytes())
    return 0


def docker_exec(args):
    """`docker exec -i[t] CONTAINER TASK ARGS`, as the TAO launcher runs a task in its container
    (whose mounts are those of the launcher's mounts file)."""
    mounts = json.loads(Path(os.environ["LAUNCHER_MOUNTS"]).read_text())["Mounts"]
    task, rest = args[3], args[4:]
    rest = to_host(rest, [(m["source"], m["destination"]) for m in mounts])
    return tao_tool({"converter": "tao-converter"}.get(task, task), rest)


def docker(args):
    if args[0] == "exec":
        return docker_exec(args)
    assert args[0] == "run"
    i, mounts = 1, []
    with_value = {"--gpus", "--user", "-v", "-e", "-w"}
    env_names = []
    while args[i].startswith("-"):
        if args[i] in with_value:
            if args[i] == "-v":
                source, destination = args[i + 1].split(":", 1)
                mounts.append((source, destination))
            if args[i] == "-e":
                env_names.append(args[i + 1])
            i += 2
        else:
            i += 1
    inner = args[i + 1:]  # after the image: sh -c SCRIPT sh ARGV...
    env = {"PATH": os.environ["PATH"], "FAKE_TAO_RECORD": os.environ["FAKE_TAO_RECORD"],
           "FAKE_TAO_FAIL": os.environ.get("FAKE_TAO_FAIL", ""), "FAKE_TAO_AP": os.environ.get("FAKE_TAO_AP", "{}"),
           **{name: os.environ[name] for name in ("FAKE_GPUS",) if name in os.environ}}
    env.update({name: os.environ[name] for name in env_names})  # `-e NAME` takes the client's value
    return subprocess.run(to_host(inner, mounts), env=env).returncode


def main():
    tool, args = Path(sys.argv[0]).name, sys.argv[1:]
    if tool == "nvidia-smi":  # a query, not a TAO tool: not recorded
        return nvidia_smi(args)
    record(tool, args)
    if tool == "docker":
        return docker(args)
    return tao_tool(tool, args)


if __name__ == "__main__":
    sys.exit(main())
