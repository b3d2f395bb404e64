//! pytorch_model.bin in torch's legacy (pre-1.6) serialization and in its zip format, read by
//! mtsum's own weights-only pickle reader: the legacy fixtures give exactly transformers' ids of
//! the same weights; every dtype reads as torch wrote it; pickles that would run code are
//! refused by name without running; damaged files keep the repair hint, format problems do not.
//! Fixtures and tests/fixtures/reference/legacy_bin.json come from
//! tests/fixtures/make_legacy_bin.py.

mod batch_support;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use batch_support::parity::{expected, settings, sources};
use batch_support::{model_reference, read_json, repo_path, stdout_of};
use candle_core::{DType, Device, Tensor};
use mtsum::generate::{generate_batch, Seq2Seq};
use mtsum::models::weights::{locate, WeightFormat, Weights};
use mtsum::models::{self, AnyModel};
use serde_json::Value;

fn manifest() -> Value {
    read_json("tests/fixtures/reference/legacy_bin.json")
}

fn load(dir: &Path) -> AnyModel {
    models::load(dir, &Device::Cpu, DType::F32).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn load_error(dir: &Path) -> String {
    match models::load(dir, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn first_step_logits(m: &AnyModel, reference: &Value) -> Vec<f32> {
    let rows = sources(reference);
    let width = rows.iter().map(Vec::len).max().unwrap();
    let pad = m.special_tokens().pad;
    let ids: Vec<u32> = rows
        .iter()
        .flat_map(|r| r.iter().copied().chain(std::iter::repeat(pad)).take(width))
        .collect();
    let mask: Vec<u32> = rows
        .iter()
        .flat_map(|r| (0..width).map(|i| u32::from(i < r.len())))
        .collect();
    let ids = Tensor::from_vec(ids, (rows.len(), width), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(mask, (rows.len(), width), &Device::Cpu).unwrap();
    let encoded = m.encode(&ids, &mask).unwrap();
    let mut cache = m.start_decoding(&encoded, &mask).unwrap();
    let start = m.special_tokens().decoder_start;
    let last = Tensor::new(vec![start; rows.len()].as_slice(), &Device::Cpu).unwrap();
    let logits = m.decode_step(&last, &mut cache).unwrap();
    logits.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn legacy_bin_models_generate_exactly_transformers_ids() {
    let manifest = manifest();
    let fixtures = manifest["models"].as_array().unwrap();
    assert!(
        fixtures.len() >= 2,
        "marian and t5 legacy fixtures expected"
    );
    for fixture in fixtures {
        let dir = repo_path(fixture["dir"].as_str().unwrap());
        let base = fixture["same_weights_as"].as_str().unwrap();
        assert_eq!(locate(&dir).unwrap().format, WeightFormat::LegacyBin);
        let reference = model_reference(base);
        let model = load(&dir);
        // The same weights as the safetensors model, bit for bit.
        let base_model = load(&repo_path(reference["model"]["dir"].as_str().unwrap()));
        assert_eq!(
            first_step_logits(&model, &reference),
            first_step_logits(&base_model, &reference),
            "{}",
            dir.display()
        );
        let sources = sources(&reference);
        let batch: Vec<&[u32]> = sources.iter().map(Vec::as_slice).collect();
        for case in reference["generate"].as_array().unwrap() {
            let want = expected(case);
            let settings = settings(&dir, &model, case);
            let got = generate_batch(&model, &settings, &batch, &Device::Cpu).unwrap();
            assert_eq!(got, want, "{} / {}", dir.display(), case["name"]);
        }
    }
}

/// The nested JSON list's shape and its numbers, flattened.
fn shape_and_values(v: &Value) -> (Vec<usize>, Vec<f64>) {
    match v {
        Value::Array(items) => {
            let mut shape = vec![items.len()];
            let mut values = Vec::new();
            let mut inner = None;
            for item in items {
                let (s, v) = shape_and_values(item);
                inner.get_or_insert(s);
                values.extend(v);
            }
            shape.extend(inner.unwrap_or_default());
            (shape, values)
        }
        Value::Bool(b) => (vec![], vec![f64::from(u8::from(*b))]),
        n => (vec![], vec![n.as_f64().unwrap()]),
    }
}

#[test]
fn every_dtype_view_and_shared_storage_reads_as_torch_wrote_it() {
    let manifest = manifest();
    let dtypes = &manifest["dtypes"];
    let values = dtypes["values"].as_object().unwrap();
    for (dir, format) in dtypes["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .zip([WeightFormat::LegacyBin, WeightFormat::ZipBin])
    {
        let dir = repo_path(dir.as_str().unwrap());
        assert_eq!(locate(&dir).unwrap().format, format);
        for dtype in [DType::F32, DType::F64] {
            let weights = Weights::open(&dir, dtype, &Device::Cpu).unwrap();
            for (name, want) in values {
                let (shape, want) = shape_and_values(want);
                let got = weights.get(name, shape.as_slice()).unwrap();
                assert_eq!(got.dtype(), dtype);
                let got: Vec<f64> = got
                    .to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(got, want, "{} / {name}", dir.display());
            }
        }
    }
}

fn marker(manifest: &Value) -> PathBuf {
    PathBuf::from(manifest["marker"].as_str().unwrap())
}

fn assert_refused(message: &str, global: &str, file: &Path) {
    assert!(message.contains(&format!("`{global}`")), "{message}");
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("not a plain weights file"), "{message}");
    assert!(!message.contains("--repair"), "no repair hint: {message}");
}

#[test]
fn a_pickle_that_calls_a_command_is_refused_by_name_and_nothing_runs() {
    let manifest = manifest();
    let marker = marker(&manifest);
    let _ = std::fs::remove_file(&marker);
    for case in manifest["malicious"].as_array().unwrap() {
        let dir = repo_path(case["dir"].as_str().unwrap());
        let global = case["global"].as_str().unwrap();
        let file = dir.join("pytorch_model.bin");
        let err = match Weights::open(&dir, DType::F32, &Device::Cpu) {
            Ok(_) => panic!("{} opened", file.display()),
            Err(e) => e.to_string(),
        };
        assert_refused(&err, global, &file);
        // Through the command line, in a complete model folder.
        let model = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(repo_path("tests/fixtures/models/marian_deep")).unwrap() {
            let f = f.unwrap().path();
            if f.file_name().unwrap() != "model.safetensors" {
                std::fs::copy(&f, model.path().join(f.file_name().unwrap())).unwrap();
            }
        }
        let planted = model.path().join("pytorch_model.bin");
        std::fs::copy(&file, &planted).unwrap();
        let out = Command::cargo_bin("mtsum")
            .unwrap()
            .args(["--device", "cpu", "generate", "--ids", "--model"])
            .arg(model.path())
            .write_stdin("Полиция\n")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert_refused(&String::from_utf8_lossy(&out.stderr), global, &planted);
    }
    assert!(
        !marker.exists(),
        "{} exists: a pickle was executed",
        marker.display()
    );
}

/// A copy of `from`'s files in a temporary folder, with pytorch_model.bin replaced by `bin`.
fn folder_with(from: &Path, bin: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join("pytorch_model.bin"), bin).unwrap();
    dir
}

#[test]
fn a_damaged_file_keeps_the_repair_hint() {
    let legacy = repo_path("tests/fixtures/models/marian_deep_legacy");
    let bytes = std::fs::read(legacy.join("pytorch_model.bin")).unwrap();
    // Inside the magic number, the state dict's pickle, the storages, one byte short.
    for keep in [3, 200, bytes.len() / 2, bytes.len() - 1] {
        let dir = folder_with(&legacy, &bytes[..keep]);
        let err = load_error(dir.path());
        assert!(err.contains("pytorch_model.bin"), "{err}");
        assert!(err.contains("--repair"), "cut at {keep}: {err}");
    }
    let zip = repo_path("tests/fixtures/models/marian_deep_bin");
    let bytes = std::fs::read(zip.join("pytorch_model.bin")).unwrap();
    // Cut short: no end of central directory.
    let dir = folder_with(&zip, &bytes[..bytes.len() - 100]);
    let err = load_error(dir.path());
    assert!(err.contains("--repair"), "{err}");
    // One byte of a storage changed: the entry's CRC no longer matches.
    let mut flipped = bytes.clone();
    let at = flipped
        .windows(6)
        .position(|w| w == b"data/0")
        .expect("a storage entry")
        + 200;
    flipped[at] ^= 0x55;
    let dir = folder_with(&zip, &flipped);
    let err = load_error(dir.path());
    assert!(err.contains("--repair"), "{err}");
    // Neither a zip nor a pickle (an HTML error page saved as the file).
    let dir = folder_with(&zip, b"<!DOCTYPE html><html>rate limited</html>");
    let err = load_error(dir.path());
    assert!(err.contains("--repair") && err.contains("neither"), "{err}");
}

#[test]
fn a_format_problem_has_its_own_message_without_the_repair_hint() {
    let legacy = repo_path("tests/fixtures/models/marian_deep_legacy");
    let bytes = std::fs::read(legacy.join("pytorch_model.bin")).unwrap();
    // Big-endian sys_info: `little_endian` NEWTRUE -> NEWFALSE.
    let at = bytes
        .windows(13)
        .position(|w| w == b"little_endian")
        .unwrap()
        + 15;
    assert_eq!(bytes[at], 0x88, "NEWTRUE after the key and its BINPUT");
    let mut big = bytes.clone();
    big[at] = 0x89;
    let dir = folder_with(&legacy, &big);
    let err = load_error(dir.path());
    assert!(
        err.contains("big-endian") && !err.contains("--repair"),
        "{err}"
    );
    // A plain pickle that torch.save did not write (no magic number).
    let dir = folder_with(&legacy, b"\x80\x02}q\x00.");
    let err = load_error(dir.path());
    assert!(
        err.contains("magic number") && !err.contains("--repair"),
        "{err}"
    );
    assert!(err.contains("safetensors"), "says what to do: {err}");
}

#[test]
fn locate_reports_each_format_and_size() {
    for (dir, format) in [
        ("marian_deep", WeightFormat::Safetensors),
        ("bart_tiny_sharded", WeightFormat::ShardedSafetensors),
        ("marian_deep_bin", WeightFormat::ZipBin),
        ("marian_deep_legacy", WeightFormat::LegacyBin),
    ] {
        let dir = repo_path(&format!("tests/fixtures/models/{dir}"));
        let found = locate(&dir).unwrap();
        assert_eq!(found.format, format, "{}", dir.display());
        let mut size: u64 = found
            .files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        if format == WeightFormat::ShardedSafetensors {
            assert_eq!(found.files.len(), 2);
            size += std::fs::metadata(&found.file).unwrap().len();
        }
        assert_eq!(found.bytes, size);
    }
    assert_eq!(WeightFormat::LegacyBin.to_string(), "legacy .bin");
    assert_eq!(
        serde_json::to_value(WeightFormat::ZipBin).unwrap(),
        "zip_bin"
    );
}

#[test]
fn the_command_line_reads_a_legacy_model_like_its_safetensors_twin() {
    let texts = "В отношении злоумышленника составлен административный протокол.\nПолиция\n";
    let run = |dir: &str| {
        let mut cmd = Command::cargo_bin("mtsum").unwrap();
        cmd.args(["--device", "cpu", "generate", "--ids", "--model"])
            .arg(repo_path(&format!("tests/fixtures/models/{dir}")))
            .write_stdin(texts);
        stdout_of(&mut cmd)
    };
    let legacy = run("marian_deep_legacy");
    assert_eq!(legacy.lines().count(), 2, "{legacy}");
    assert_eq!(legacy, run("marian_deep"));
}
