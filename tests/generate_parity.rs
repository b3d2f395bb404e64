//! The engine against transformers' `generate()`: for every fixture model and every case in
//! tests/fixtures/reference/models/<name>.json, the same ids for each input alone, inside the
//! reference's padded batch, and inside padded batches of 1, 2, 7 and 64 inputs; and the same
//! ids from every other weight file of the same model (pytorch_model.bin, untied copies).

mod batch_support;

use std::path::Path;

use batch_support::{model_references, repo_path};
use candle_core::{DType, Device};
use mtsum::generate::{generate_batch, GenerationConfig, GenerationOverrides, Seq2Seq, Settings};
use serde_json::Value;

/// The reference's source ids, padding removed.
fn sources(reference: &Value) -> Vec<Vec<u32>> {
    let ids = reference["input_ids"].as_array().unwrap();
    let lengths = reference["input_lengths"].as_array().unwrap();
    ids.iter()
        .zip(lengths)
        .map(|(row, len)| {
            let row: Vec<u32> = serde_json::from_value(row.clone()).unwrap();
            row[..len.as_u64().unwrap() as usize].to_vec()
        })
        .collect()
}

/// The case's expected generated ids per input, without the decoder start token.
fn expected(case: &Value) -> Vec<Vec<u32>> {
    let ids: Vec<Vec<u32>> = serde_json::from_value(case["ids"].clone()).unwrap();
    ids.into_iter().map(|row| row[1..].to_vec()).collect()
}

/// The model's generation config with the case's keyword arguments on top, as generate() does.
fn settings(dir: &Path, model: &impl Seq2Seq, case: &Value) -> Settings {
    let mut config = GenerationConfig::from_dir(dir).unwrap();
    config.update(&GenerationConfig::from_json(&case["kwargs"], "kwargs").unwrap());
    config
        .resolve(
            &GenerationOverrides::default(),
            model.special_tokens(),
            model.max_source_positions(),
        )
        .unwrap()
}

fn run(model: &impl Seq2Seq, settings: &Settings, batch: &[&[u32]]) -> Vec<Vec<u32>> {
    generate_batch(model, settings, batch, &Device::Cpu).unwrap()
}

fn load(dir: &Path) -> mtsum::models::AnyModel {
    mtsum::models::load(dir, &Device::Cpu, DType::F32)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

#[test]
fn every_case_matches_transformers_alone_and_in_the_reference_batch() {
    for reference in model_references::<Value>() {
        let name = reference["model"]["name"].as_str().unwrap();
        let dir = repo_path(reference["model"]["dir"].as_str().unwrap());
        let model = load(&dir);
        let sources = sources(&reference);
        let all: Vec<&[u32]> = sources.iter().map(Vec::as_slice).collect();
        for case in reference["generate"].as_array().unwrap() {
            let label = format!("{name} / {}", case["name"]);
            let settings = settings(&dir, &model, case);
            let want = expected(case);
            for (i, source) in all.iter().enumerate() {
                assert_eq!(
                    run(&model, &settings, &[source]),
                    vec![want[i].clone()],
                    "{label}: input {i} alone"
                );
            }
            assert_eq!(
                run(&model, &settings, &all),
                want,
                "{label}: reference batch"
            );
        }
    }
}

/// Batches of 1, 2, 7 and 64 rows made of the reference inputs (repeated, in a shuffled order)
/// give every input its reference ids.
#[test]
fn padded_batches_of_1_2_7_and_64_give_the_same_ids() {
    const CASES: [&str; 4] = ["default", "greedy", "beam4_lp2_early", "beam6_no_repeat_2"];
    for reference in model_references::<Value>() {
        let name = reference["model"]["name"].as_str().unwrap();
        let dir = repo_path(reference["model"]["dir"].as_str().unwrap());
        let model = load(&dir);
        let sources = sources(&reference);
        let cases = reference["generate"].as_array().unwrap();
        for case in cases
            .iter()
            .filter(|c| CASES.contains(&c["name"].as_str().unwrap()))
        {
            let settings = settings(&dir, &model, case);
            let want = expected(case);
            for size in [1, 2, 7, 64] {
                let order: Vec<usize> = (0..size).map(|k| (k * 5 + 3) % sources.len()).collect();
                let batch: Vec<&[u32]> = order.iter().map(|&i| sources[i].as_slice()).collect();
                let got = run(&model, &settings, &batch);
                for (row, &i) in order.iter().enumerate() {
                    assert_eq!(
                        got[row], want[i],
                        "{name} / {}: batch of {size}, row {row} (input {i})",
                        case["name"]
                    );
                }
            }
        }
    }
}

#[test]
fn other_weight_files_give_the_same_ids() {
    for reference in model_references::<Value>() {
        let name = reference["model"]["name"].as_str().unwrap();
        let sources = sources(&reference);
        let all: Vec<&[u32]> = sources.iter().map(Vec::as_slice).collect();
        let cases = reference["generate"].as_array().unwrap();
        for variant in reference["model"]["same_weights_in"].as_array().unwrap() {
            let dir = repo_path(variant.as_str().unwrap());
            let model = load(&dir);
            for case in cases.iter().take(2) {
                let settings = settings(&dir, &model, case);
                assert_eq!(
                    run(&model, &settings, &all),
                    expected(case),
                    "{name}: {}",
                    dir.display()
                );
            }
        }
    }
}
