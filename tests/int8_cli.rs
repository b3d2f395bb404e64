//! `--dtype int8` on the command line: `bench` and `models inspect` say they ran in int8, and
//! asking it of a GPU is a usage error (exit 2) naming what works.

mod batch_support;

use assert_cmd::Command;
use batch_support::{json_lines, repo_path};
use predicates::prelude::*;

fn fixture(name: &str) -> String {
    let dir = repo_path(&format!("tests/fixtures/models/{name}"));
    dir.to_string_lossy().to_string()
}

fn mtsum() -> Command {
    let mut cmd = Command::cargo_bin("mtsum").unwrap();
    cmd.env("HF_HUB_OFFLINE", "1");
    cmd
}

#[test]
fn bench_runs_int8_and_reports_it() {
    for model in ["marian_tiny", "rut5_tiny"] {
        let lines = json_lines(
            mtsum()
                .args(["bench", "--device", "cpu", "--dtype", "int8"])
                .args(["--translator", &fixture(model)])
                .args([
                    "--sentences",
                    "3",
                    "--new-tokens",
                    "4",
                    "--repeat",
                    "1",
                    "--json",
                ]),
        );
        assert_eq!(lines.len(), 2, "{model}");
        for line in &lines {
            assert_eq!(line["dtype"], "int8", "{model}");
            assert_eq!(line["generated_tokens"], 12, "{model}");
        }
    }
}

#[test]
fn inspect_loads_in_int8() {
    mtsum()
        .args(["models", "inspect", "--device", "cpu", "--dtype", "int8"])
        .arg(fixture("t5_tiny"))
        .assert()
        .success()
        .stdout(predicate::str::contains("loaded      on cpu in int8\n"));
}

#[test]
fn int8_on_a_gpu_is_a_usage_error_naming_what_works() {
    for device in ["cuda", "cuda:1", "metal"] {
        mtsum()
            .args(["bench", "--device", device, "--dtype", "int8"])
            .args(["--translator", &fixture("marian_tiny")])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "--dtype int8 runs on the CPU only, not on",
            ))
            .stderr(predicate::str::contains("add --device cpu"))
            .stderr(predicate::str::contains("--dtype f16, bf16 or f32"));
    }
}
