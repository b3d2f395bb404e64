//! What the parity tests read from transformers' reference files: the source ids, the ids
//! generate() produced, and the settings it ran with.

use std::path::Path;

use mtsum::generate::{GenerationConfig, GenerationOverrides, Seq2Seq, Settings};
use serde_json::Value;

/// The reference's source ids, padding removed.
pub fn sources(reference: &Value) -> Vec<Vec<u32>> {
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
pub fn expected(case: &Value) -> Vec<Vec<u32>> {
    let ids: Vec<Vec<u32>> = serde_json::from_value(case["ids"].clone()).unwrap();
    ids.into_iter().map(|row| row[1..].to_vec()).collect()
}

/// The model's generation config with the case's keyword arguments on top, as generate() does.
pub fn settings(dir: &Path, model: &impl Seq2Seq, case: &Value) -> Settings {
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
