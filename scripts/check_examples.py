#!/usr/bin/env python3
"""Checks the sharded-run examples with real parsers (PyYAML, bash -n): what tests/examples.rs
reads from them by text must be what a YAML parser, GitHub Actions, Kubernetes and Slurm see.

    pip install pyyaml && python3 scripts/check_examples.py

Exits non-zero with every problem listed. tests/examples.rs runs the examples' commands; this
script checks their structure, which the Rust tests (no YAML dependency) check only by text.
"""

import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


def github_actions():
    path = ROOT / "examples/ci/github-actions.yml"
    workflow = yaml.safe_load(path.read_text())
    jobs = workflow["jobs"]
    check(set(jobs) == {"prepare", "shard", "merge"}, f"{path}: jobs {list(jobs)}")
    shards = int(workflow["env"]["SHARDS"])
    matrix = jobs["shard"]["strategy"]["matrix"]["shard"]
    check(matrix == list(range(1, shards + 1)), f"{path}: matrix {matrix} vs SHARDS={shards}")
    check(jobs["shard"]["needs"] == "prepare", f"{path}: shard must need prepare")
    check(set(jobs["merge"]["needs"]) == {"prepare", "shard"}, f"{path}: merge needs")
    check("always()" in jobs["merge"]["if"], f"{path}: merge must run after failed shards")
    steps = {s.get("uses", s.get("name")): s for s in jobs["prepare"]["steps"]}
    cache = steps.get("actions/cache@v4")
    check(cache is not None, f"{path}: prepare has no actions/cache")
    if cache:
        check("steps.commits.outputs.key" in cache["with"]["key"],
              f"{path}: the cache key is not the models' commits")
    restore = [s for s in jobs["shard"]["steps"] if s.get("uses") == "actions/cache/restore@v4"]
    check(len(restore) == 1 and restore[0]["with"]["key"] ==
          "${{ needs.prepare.outputs.models-key }}", f"{path}: shards restore another cache")
    runs = [s["run"] for s in jobs["shard"]["steps"] if "run" in s]
    check(any("--shard ${{ matrix.shard }}/$SHARDS" in r and "--offline" in r for r in runs),
          f"{path}: no offline `--shard matrix/SHARDS` run")
    uploads = [s for s in jobs["merge"]["steps"] if s.get("uses") == "actions/upload-artifact@v4"]
    check(any(u["with"]["path"] == "digest/" for u in uploads), f"{path}: digest not uploaded")
    downloads = [s for s in jobs["merge"]["steps"]
                 if s.get("uses") == "actions/download-artifact@v4"]
    check(any(d["with"].get("pattern") == "shard-*" for d in downloads),
          f"{path}: merge does not download the shards")


def kubernetes():
    path = ROOT / "examples/k8s/indexed-job.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    by_name = {d["metadata"]["name"]: d for d in docs}
    check(set(by_name) == {"mtsum-data", "mtsum-fetch", "mtsum-shards", "mtsum-merge"},
          f"{path}: objects {list(by_name)}")
    for doc in docs:
        check("step" in doc["metadata"]["labels"], f"{path}: {doc['metadata']['name']} has no step")
    job = by_name["mtsum-shards"]["spec"]
    check(job["completionMode"] == "Indexed", f"{path}: not an Indexed Job")
    container = job["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    check(int(env["MTSUM_SHARDS"]) == job["completions"],
          f"{path}: MTSUM_SHARDS={env['MTSUM_SHARDS']} vs completions={job['completions']}")
    command = container["command"]
    check(command[:2] == ["mtsum", "run"] and "--offline" in command and
          command[command.index("--shard") + 1] == "auto", f"{path}: shard command {command}")
    out = command[command.index("--out") + 1]
    merge = by_name["mtsum-merge"]["spec"]["template"]["spec"]["containers"][0]["command"]
    check(merge[:3] == ["mtsum", "merge", out], f"{path}: merge reads {merge[2]}, shards write {out}")
    for name in ["mtsum-fetch", "mtsum-shards", "mtsum-merge"]:
        volumes = by_name[name]["spec"]["template"]["spec"]["volumes"]
        check(volumes[0]["persistentVolumeClaim"]["claimName"] == "mtsum-data",
              f"{path}: {name} does not mount the shared volume")
    fetch_env = by_name["mtsum-fetch"]["spec"]["template"]["spec"]["containers"][0]["env"]
    check({e["name"]: e["value"] for e in fetch_env}["HF_HOME"] == env["HF_HOME"],
          f"{path}: fetch warms another cache than the shards read")


def slurm():
    path = ROOT / "examples/slurm/mtsum-array.sbatch"
    text = path.read_text()
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    check(result.returncode == 0, f"{path}: bash -n: {result.stderr}")
    check(re.search(r"^#SBATCH --array=\d+-\d+$", text, re.M) is not None, f"{path}: no --array")
    check("--shard auto" in text and "--offline" in text, f"{path}: not an offline auto shard")
    check("--dependency=afterany" in text, f"{path}: the merge does not wait for the array")


github_actions()
kubernetes()
slurm()
for problem in problems:
    print(problem, file=sys.stderr)
print("examples: " + ("ok" if not problems else f"{len(problems)} problems"))
sys.exit(1 if problems else 0)
