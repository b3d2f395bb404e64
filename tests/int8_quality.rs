//! `--dtype int8` against f32 on the trained tiny models of tests/fixtures/models: how often
//! int8 generates the same ids as f32 on the reference inputs (every generation case of
//! tests/fixtures/reference/models), how far its logits stray, and that a sentence's int8
//! logits do not depend on the batch it is in. int8 trades a little fidelity for speed; these
//! bounds keep the trade small.

mod batch_support;

use std::path::Path;

use batch_support::parity::{expected, settings, sources};
use batch_support::{model_references, repo_path};
use candle_core::{DType, Device, Tensor};
use mtsum::generate::{generate_batch, Seq2Seq};
use mtsum::models::{self, AnyModel, WeightPrecision};
use serde_json::Value;

/// Least share of (case, input) pairs whose int8 ids equal f32's, per family. Measured: Marian
/// 96.2 % (200 of 208), T5 81.1 % (253 of 312). The T5 fixtures (d_model 16-32, ~20 generated
/// tokens an input, often near-ties) are the most sensitive: keeping any one kind of layer
/// (attention, feed-forward in or out, output layer) in f32 moves their share by at most 3
/// points, so the loss is spread over the whole stack rather than one layer gone wrong.
const MIN_AGREEMENT: [(&str, f64); 2] = [("marian", 0.90), ("t5", 0.80)];
/// Largest |int8 logit - f32 logit| allowed per family, over every step of every reference
/// input decoded with f32's ids (the fixtures' largest logits are 18 to 27 in magnitude).
const MAX_LOGIT_DEVIATION: [(&str, f32); 2] = [("marian", 1.0), ("t5", 4.0)];

fn load(dir: &Path, precision: WeightPrecision) -> AnyModel {
    models::load_with(dir, &Device::Cpu, DType::F32, precision)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The family a fixture measures: "marian", "t5" (t5, mt5), or None for the others.
fn family(reference: &Value) -> Option<&'static str> {
    match reference["model"]["model_type"].as_str().unwrap() {
        "marian" => Some("marian"),
        "t5" | "mt5" => Some("t5"),
        _ => None,
    }
}

/// (agreeing, total) (case, input) pairs of one fixture.
fn agreement(reference: &Value) -> (usize, usize) {
    let dir = repo_path(reference["model"]["dir"].as_str().unwrap());
    let (full, int8) = (
        load(&dir, WeightPrecision::Float),
        load(&dir, WeightPrecision::Int8),
    );
    let sources = sources(reference);
    let batch: Vec<&[u32]> = sources.iter().map(Vec::as_slice).collect();
    let (mut same, mut total) = (0, 0);
    for case in reference["generate"].as_array().unwrap() {
        let settings = settings(&dir, &full, case);
        let want = generate_batch(&full, &settings, &batch, &Device::Cpu).unwrap();
        // f32 itself is transformers' (generate_parity checks it); a mismatch here would make
        // the share below measure the wrong thing.
        assert_eq!(want, expected(case), "{}", case["name"]);
        let got = generate_batch(&int8, &settings, &batch, &Device::Cpu).unwrap();
        same += got.iter().zip(&want).filter(|(g, w)| g == w).count();
        total += want.len();
    }
    (same, total)
}

#[test]
fn int8_generates_the_same_ids_as_f32_for_at_least_90_percent_of_inputs() {
    let mut families: Vec<(&str, usize, usize)> = Vec::new();
    for reference in model_references::<Value>() {
        let Some(family) = family(&reference) else {
            continue;
        };
        let (same, total) = agreement(&reference);
        eprintln!(
            "{}: int8 = f32 for {same} of {total} (case, input) pairs",
            reference["model"]["name"]
        );
        match families.iter_mut().find(|(f, _, _)| *f == family) {
            Some((_, s, t)) => (*s, *t) = (*s + same, *t + total),
            None => families.push((family, same, total)),
        }
    }
    let names: Vec<&str> = families.iter().map(|(f, _, _)| *f).collect();
    assert_eq!(names, ["marian", "t5"], "fixtures of both families");
    for ((family, same, total), (_, least)) in families.into_iter().zip(MIN_AGREEMENT) {
        let share = same as f64 / total as f64;
        eprintln!("{family}: {:.1} % agree ({same} of {total})", share * 100.0);
        assert!(
            share >= least,
            "{family}: int8 agrees with f32 on only {same} of {total}"
        );
    }
}

/// Logits of every step of input `i` alone, decoding `ids` (f32's) teacher-forced, flattened.
fn forced_logits(m: &AnyModel, source: &[u32], ids: &[u32]) -> Vec<f32> {
    let dev = Device::Cpu;
    let src = Tensor::new(source, &dev).unwrap().unsqueeze(0).unwrap();
    let mask = Tensor::ones((1, source.len()), DType::U32, &dev).unwrap();
    let encoded = m.encode(&src, &mask).unwrap();
    let mut cache = m.start_decoding(&encoded, &mask).unwrap();
    let start = m.special_tokens().decoder_start;
    let mut out = Vec::new();
    for &token in std::iter::once(&start).chain(ids) {
        let last = Tensor::new(&[token], &dev).unwrap();
        let logits = m.decode_step(&last, &mut cache).unwrap();
        out.extend(logits.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    out
}

#[test]
fn int8_logits_stay_close_to_f32() {
    let mut measured = 0;
    for reference in model_references::<Value>() {
        let Some(family) = family(&reference) else {
            continue;
        };
        let bound = MAX_LOGIT_DEVIATION
            .iter()
            .find(|(f, _)| *f == family)
            .unwrap()
            .1;
        let name = reference["model"]["name"].as_str().unwrap().to_string();
        let dir = repo_path(reference["model"]["dir"].as_str().unwrap());
        let (full, int8) = (
            load(&dir, WeightPrecision::Float),
            load(&dir, WeightPrecision::Int8),
        );
        let case = &reference["generate"][0];
        let (mut deviation, mut spread) = (0f32, 0f32);
        for (source, ids) in sources(&reference).iter().zip(expected(case)) {
            let want = forced_logits(&full, source, &ids);
            let got = forced_logits(&int8, source, &ids);
            for (g, w) in got.iter().zip(&want) {
                if w.is_finite() {
                    deviation = deviation.max((g - w).abs());
                    spread = spread.max(w.abs());
                }
            }
            measured += 1;
        }
        eprintln!(
            "{name}: largest int8 logit deviation {deviation:.4} (largest |logit| {spread:.2})"
        );
        assert!(
            deviation <= bound,
            "{name}: int8 logits {deviation} away from f32"
        );
    }
    assert!(measured > 0, "no Marian or T5 fixture measured");
}

/// The int8 kernels give a row the same bits whatever the batch (qgemm's unit tests), so
/// int8, like f32, translates an input the same alone and in a padded batch, greedy and beam.
#[test]
fn an_input_gets_the_same_int8_ids_alone_and_in_a_padded_batch() {
    for reference in model_references::<Value>() {
        let name = reference["model"]["name"].as_str().unwrap().to_string();
        let dir = repo_path(reference["model"]["dir"].as_str().unwrap());
        let m = load(&dir, WeightPrecision::Int8);
        let sources = sources(&reference);
        let batch: Vec<&[u32]> = sources.iter().map(Vec::as_slice).collect();
        for case in reference["generate"].as_array().unwrap() {
            let settings = settings(&dir, &m, case);
            let together = generate_batch(&m, &settings, &batch, &Device::Cpu).unwrap();
            for (i, source) in batch.iter().enumerate() {
                let alone = generate_batch(&m, &settings, &[source], &Device::Cpu).unwrap();
                assert_eq!(
                    alone[0], together[i],
                    "{name} / {}: input {i}",
                    case["name"]
                );
            }
        }
    }
}
