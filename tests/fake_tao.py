"""A stand-in for TAO's executables, installed on PATH by the tests under the names detectnet_v2,
tao-converter, tao (the launcher) and docker. It records its argv and environment to the JSON-lines
file $FAKE_TAO_RECORD, writes the files TAO would write, echoes the key as a careless tool might,
and fails (after writing half an output) when $FAKE_TAO_FAIL names it."""
import json
import os
import subprocess
import sys
from pathlib import Path


def record(tool, args):
    entry = {"tool": tool, "argv": args,
             "env": {k: os.environ.get(k) for k in ("TAO_KEY", "MY_KEY", "LAUNCHER_MOUNTS")}}
    if tool == "tao" and os.environ.get("LAUNCHER_MOUNTS"):
        entry["mounts"] = json.loads(Path(os.environ["LAUNCHER_MOUNTS"]).read_text())
    with open(os.environ["FAKE_TAO_RECORD"], "a") as handle:
        handle.write(json.dumps(entry) + "\n")


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
        target = option(args, "-o") or option(args, "-e")
        if target:
            Path(target).write_bytes(b"half written")
        print(f"[TAO] ERROR: {tool} failed: CUDA out of memory while building the network", file=sys.stderr)
        return 1
    print(f"[TAO] running {tool} {' '.join(args)}")
    key = option(args, "-k")
    if key:
        print(f"[TAO] decrypting with key {key}")
    if tool == "detectnet_v2" and args[0] == "calibration_tensorfile":
        Path(option(args, "-o")).write_bytes(b"fake tensorfile")
    elif tool == "detectnet_v2" and args[0] == "export":
        out = Path(option(args, "-o"))
        out.write_bytes(b"fake exported model")
        if "--cal_cache_file" in args:
            Path(option(args, "--cal_cache_file")).write_text("TRT-8601-EntropyCalibration2\ninput_1: 3c010a14\n")
        if "--gen_ds_config" in args:
            config = f"net-scale-factor=0.00392156862745098\ntlt-model-key={key}\n"
            (out.parent / "nvinfer_config.txt").write_text(config)
            (out.parent / "labels.txt").write_text("car\ncyclist\npedestrian\n")
    elif tool == "detectnet_v2" and args[0] == "gen_trt_engine":
        Path(option(args, "--engine_file")).write_bytes(b"fake engine")
    elif tool == "tao-converter":
        Path(option(args, "-e")).write_bytes(b"fake engine")
    return 0


def docker(args):
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
           "FAKE_TAO_FAIL": os.environ.get("FAKE_TAO_FAIL", "")}
    env.update({name: os.environ[name] for name in env_names})  # `-e NAME` takes the client's value
    return subprocess.run(to_host(inner, mounts), env=env).returncode


def main():
    tool, args = Path(sys.argv[0]).name, sys.argv[1:]
    record(tool, args)
    if tool == "docker":
        return docker(args)
    if tool == "tao":
        mounts = json.loads(Path(os.environ["LAUNCHER_MOUNTS"]).read_text())["Mounts"]
        args = to_host(args, [(m["source"], m["destination"]) for m in mounts])
        return tao_tool(args[0], args[1:])
    return tao_tool(tool, args)


if __name__ == "__main__":
    sys.exit(main())
