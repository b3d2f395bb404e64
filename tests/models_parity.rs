//! The model families against transformers, on the tiny models of tests/fixtures/models and
//! the outputs transformers gave for them (tests/fixtures/reference/models/<name>.json, made by
//! tests/fixtures/make_fixtures.py). Everything in f32 on the CPU.

mod batch_support;

use std::path::Path;

use batch_support::{model_references, repo_path};
use candle_core::{DType, Device, Tensor};
use mtsum::generate::Seq2Seq;
use mtsum::models::{self, AnyModel};
use serde::Deserialize;

/// transformers' outputs are matched to this absolute difference.
const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Reference {
    model: ModelInfo,
    input_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u32>>,
    input_lengths: Vec<usize>,
    decoder_start_token_id: u32,
    encoder_last_hidden_state: Vec<Vec<Vec<f32>>>,
    encoder_last_hidden_state_batched: Vec<Vec<Vec<f32>>>,
    first_step_logits: Vec<Vec<f32>>,
    teacher_forced: TeacherForced,
    generate: Vec<GenerateCase>,
}

#[derive(Deserialize)]
struct ModelInfo {
    name: String,
    dir: String,
    same_weights_in: Vec<String>,
    model_type: String,
}

#[derive(Deserialize)]
struct TeacherForced {
    input_index: usize,
    decoder_input_ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct GenerateCase {
    effective: serde_json::Value,
}

fn load(dir: &str) -> AnyModel {
    let path = repo_path(dir);
    models::load(&path, &Device::Cpu, DType::F32)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids_tensor(rows: &[Vec<u32>]) -> Tensor {
    let width = rows[0].len();
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), width), &Device::Cpu).unwrap()
}

/// Input `i` alone: its ids and a mask of ones.
fn alone(r: &Reference, i: usize) -> (Tensor, Tensor) {
    let ids = vec![r.input_ids[i][..r.input_lengths[i]].to_vec()];
    let mask = vec![vec![1u32; r.input_lengths[i]]];
    (ids_tensor(&ids), ids_tensor(&mask))
}

fn batch(r: &Reference) -> (Tensor, Tensor) {
    (ids_tensor(&r.input_ids), ids_tensor(&r.attention_mask))
}

fn max_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    let diff = max_diff(got, want);
    assert!(
        diff <= tolerance,
        "{what}: max difference {diff} > {tolerance}"
    );
}

/// Row `i` of a (rows, len, d) tensor, its first `len` positions, flattened.
fn row_prefix(t: &Tensor, i: usize, len: usize) -> Vec<f32> {
    t.get(i)
        .unwrap()
        .narrow(0, 0, len)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn step(m: &AnyModel, tokens: &[u32], cache: &mut models::DecoderCache) -> Tensor {
    let last = Tensor::new(tokens, &Device::Cpu).unwrap();
    m.decode_step(&last, cache).unwrap()
}

fn logits_row(logits: &Tensor, i: usize) -> Vec<f32> {
    logits.get(i).unwrap().to_vec1().unwrap()
}

#[test]
fn encoder_outputs_match_transformers_alone_and_in_a_padded_batch() {
    for r in model_references::<Reference>() {
        let m = load(&r.model.dir);
        let (ids, mask) = batch(&r);
        let batched = m.encode(&ids, &mask).unwrap();
        for (i, &len) in r.input_lengths.iter().enumerate() {
            let name = &r.model.name;
            let (ids, mask) = alone(&r, i);
            let single = row_prefix(&m.encode(&ids, &mask).unwrap(), 0, len);
            let want: Vec<f32> = r.encoder_last_hidden_state[i].concat();
            assert_close(
                &single,
                &want,
                TOLERANCE,
                &format!("{name} input {i} alone"),
            );
            let in_batch = row_prefix(&batched, i, len);
            let want_batched: Vec<f32> = r.encoder_last_hidden_state_batched[i].concat();
            assert_close(
                &in_batch,
                &want_batched,
                TOLERANCE,
                &format!("{name} input {i} in batch"),
            );
            assert_close(
                &in_batch,
                &single,
                1e-5,
                &format!("{name} input {i}: batch vs alone"),
            );
        }
    }
}

#[test]
fn first_step_logits_match_transformers_alone_and_in_a_padded_batch() {
    for r in model_references::<Reference>() {
        let m = load(&r.model.dir);
        let name = &r.model.name;
        assert_eq!(
            m.special_tokens().decoder_start,
            r.decoder_start_token_id,
            "{name}"
        );
        let (ids, mask) = batch(&r);
        let encoded = m.encode(&ids, &mask).unwrap();
        let mut cache = m.start_decoding(&encoded, &mask).unwrap();
        let starts = vec![r.decoder_start_token_id; r.input_ids.len()];
        let logits = step(&m, &starts, &mut cache);
        assert_eq!(logits.dims(), &[r.input_ids.len(), m.vocab_size()]);
        assert_eq!(logits.dtype(), DType::F32);
        for (i, want) in r.first_step_logits.iter().enumerate() {
            let in_batch = logits_row(&logits, i);
            assert_close(
                &in_batch,
                want,
                TOLERANCE,
                &format!("{name} input {i} in batch"),
            );
            let (ids, mask) = alone(&r, i);
            let encoded = m.encode(&ids, &mask).unwrap();
            let mut cache = m.start_decoding(&encoded, &mask).unwrap();
            let single = logits_row(&step(&m, &[r.decoder_start_token_id], &mut cache), 0);
            assert_close(&single, want, TOLERANCE, &format!("{name} input {i} alone"));
        }
    }
}

#[test]
fn cached_decoding_matches_teacher_forced_logits() {
    for r in model_references::<Reference>() {
        let m = load(&r.model.dir);
        let tf = &r.teacher_forced;
        let (ids, mask) = alone(&r, tf.input_index);
        let encoded = m.encode(&ids, &mask).unwrap();
        let mut cache = m.start_decoding(&encoded, &mask).unwrap();
        for (pos, (&token, want)) in tf.decoder_input_ids.iter().zip(&tf.logits).enumerate() {
            let got = logits_row(&step(&m, &[token], &mut cache), 0);
            let what = format!("{} position {pos}", r.model.name);
            assert_close(&got, want, TOLERANCE, &what);
        }
    }
}

/// Logits of input `index` decoded alone, teacher-forced with `tokens`, one row per position.
fn decoded_alone(m: &AnyModel, r: &Reference, index: usize, tokens: &[u32]) -> Vec<Vec<f32>> {
    let (ids, mask) = alone(r, index);
    let encoded = m.encode(&ids, &mask).unwrap();
    let mut cache = m.start_decoding(&encoded, &mask).unwrap();
    tokens
        .iter()
        .map(|&t| logits_row(&step(m, &[t], &mut cache), 0))
        .collect()
}

/// Rows are expanded to beams, reordered within and across inputs, made uneven and dropped in
/// the middle of decoding, as beam search does: every row must go on exactly as the history it
/// was copied from, decoded alone.
#[test]
fn select_rows_carries_each_row_history() {
    for r in model_references::<Reference>() {
        let m = load(&r.model.dir);
        let tf = &r.teacher_forced;
        // input B is the teacher-forced one (its logits come from transformers); input A another
        // with a history of our choosing (its logits from decoding it alone)
        let (a, b) = ((tf.input_index + 1) % r.input_ids.len(), tf.input_index);
        let a_tokens: Vec<u32> = tf.decoder_input_ids.iter().rev().copied().collect();
        let expected = [decoded_alone(&m, &r, a, &a_tokens), tf.logits.clone()];
        let tokens = [a_tokens, tf.decoder_input_ids.clone()];
        let (ids, mask) = (
            ids_tensor(&[r.input_ids[a].clone(), r.input_ids[b].clone()]),
            ids_tensor(&[r.attention_mask[a].clone(), r.attention_mask[b].clone()]),
        );
        let encoded = m.encode(&ids, &mask).unwrap();
        let mut cache = m.start_decoding(&encoded, &mask).unwrap();
        // each row's input (0 = A, 1 = B), updated with every selection
        let mut labels = vec![0usize, 1];
        // (position at which to select, rows to keep)
        let selections: [(usize, &[u32]); 5] = [
            (0, &[1, 1, 0, 0]), // expand to two beams each, B first
            (2, &[1, 0, 2, 3]), // reorder within a group
            (3, &[2, 0, 1, 3]), // across groups: uneven
            (4, &[1, 2]),       // drop rows
            (5, &[1]),          // one row left
        ];
        for pos in 0..tf.decoder_input_ids.len() {
            if let Some((_, keep)) = selections.iter().find(|(at, _)| *at == pos) {
                let rows = Tensor::new(*keep, &Device::Cpu).unwrap();
                m.select_rows(&mut cache, &rows).unwrap();
                labels = keep.iter().map(|&k| labels[k as usize]).collect();
            }
            let last: Vec<u32> = labels.iter().map(|&l| tokens[l][pos]).collect();
            let logits = step(&m, &last, &mut cache);
            for (row, &label) in labels.iter().enumerate() {
                let what = format!("{} row {row} (input {label}) position {pos}", r.model.name);
                assert_close(
                    &logits_row(&logits, row),
                    &expected[label][pos],
                    TOLERANCE,
                    &what,
                );
            }
        }
    }
}

#[test]
fn every_weight_format_gives_the_same_logits() {
    let mut variants = 0;
    for r in model_references::<Reference>() {
        let m = load(&r.model.dir);
        let (ids, mask) = batch(&r);
        let first_step = |m: &AnyModel| {
            let encoded = m.encode(&ids, &mask).unwrap();
            let mut cache = m.start_decoding(&encoded, &mask).unwrap();
            let starts = vec![r.decoder_start_token_id; r.input_ids.len()];
            let logits = step(m, &starts, &mut cache);
            logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let want = first_step(&m);
        for dir in &r.model.same_weights_in {
            variants += 1;
            let got = first_step(&load(dir));
            assert_eq!(got, want, "{dir} vs {}", r.model.dir);
        }
    }
    assert!(variants > 0, "no fixture comes in a second weight format");
}

#[test]
fn special_tokens_follow_the_generation_config() {
    for r in model_references::<Reference>() {
        let m = load(&r.model.dir);
        let e = &r.generate[0].effective;
        let id = |key: &str| e[key].as_u64().map(|n| n as u32);
        let s = m.special_tokens();
        let name = &r.model.name;
        assert_eq!(
            Some(s.decoder_start),
            id("decoder_start_token_id"),
            "{name}"
        );
        assert_eq!(Some(s.eos), id("eos_token_id"), "{name}");
        assert_eq!(Some(s.pad), id("pad_token_id"), "{name}");
        assert_eq!(s.forced_eos, id("forced_eos_token_id"), "{name}");
        assert_eq!(s.forced_bos, id("forced_bos_token_id"), "{name}");
        let banned: Vec<u32> = e["bad_words_ids"]
            .as_array()
            .map(|l| l.iter().map(|w| w[0].as_u64().unwrap() as u32).collect())
            .unwrap_or_default();
        assert_eq!(s.banned, banned, "{name}");
        assert_eq!(m.model_type().name(), r.model.model_type, "{name}");
    }
}

#[test]
fn an_input_longer_than_the_position_table_is_an_error() {
    let mut checked = 0;
    for r in model_references::<Reference>() {
        let m = load(&r.model.dir);
        let Some(max) = m.max_source_positions() else {
            continue;
        };
        let encode = |len: usize| {
            let ids =
                Tensor::from_vec(vec![r.input_ids[0][0]; len], (1, len), &Device::Cpu).unwrap();
            m.encode(&ids, &ids.ones_like().unwrap())
        };
        assert!(
            encode(max).is_ok(),
            "{}: {max} tokens must fit",
            r.model.name
        );
        let err = encode(max + 1).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{} tokens", max + 1)) && err.contains("max_position_embeddings"),
            "{}: {err}",
            r.model.name
        );
        // the decoder's positions run out the same way
        let (ids, mask) = alone(&r, 0);
        let encoded = m.encode(&ids, &mask).unwrap();
        let mut cache = m.start_decoding(&encoded, &mask).unwrap();
        for _ in 0..max {
            step(&m, &[r.decoder_start_token_id], &mut cache);
        }
        let last = Tensor::new(&[r.decoder_start_token_id], &Device::Cpu).unwrap();
        let err = m.decode_step(&last, &mut cache).unwrap_err().to_string();
        assert!(
            err.contains("target") && err.contains(&format!("{} tokens", max + 1)),
            "{err}"
        );
        checked += 1;
    }
    assert!(checked > 0, "no fixture has a position limit");
}

/// A copy of a fixture folder's config files, for tests that break one thing.
fn copy_config(from: &Path, to: &Path) {
    for name in ["config.json", "generation_config.json"] {
        if from.join(name).is_file() {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }
}

#[test]
fn a_missing_weight_names_the_file_and_the_tensor() {
    let r = &model_references::<Reference>()[0];
    let source = repo_path(&r.model.dir);
    let dir = tempfile::tempdir().unwrap();
    copy_config(&source, dir.path());
    let tensors =
        candle_core::safetensors::load(source.join("model.safetensors"), &Device::Cpu).unwrap();
    let victim = tensors
        .keys()
        .find(|k| {
            k.contains("layers.0.fc2.weight") || k.contains("block.0.layer.1.DenseReluDense.wo")
        })
        .expect("a feed-forward weight")
        .clone();
    let kept: std::collections::HashMap<_, _> =
        tensors.into_iter().filter(|(k, _)| *k != victim).collect();
    candle_core::safetensors::save(&kept, dir.path().join("model.safetensors")).unwrap();
    let err = match models::load(dir.path(), &Device::Cpu, DType::F32) {
        Ok(_) => panic!("loaded without {victim}"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&victim) && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn a_folder_without_weights_or_with_an_unknown_family_is_a_clear_error() {
    let r = &model_references::<Reference>()[0];
    let dir = tempfile::tempdir().unwrap();
    copy_config(&repo_path(&r.model.dir), dir.path());
    let err = models::load(dir.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no weights") && err.contains("model.safetensors"),
        "{err}"
    );

    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = models::load(dir.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("gpt2") && err.contains("config.json"), "{err}");
}

/// f16 and bf16 weights run the same code; their logits stay near transformers' f32 ones
/// (relative to the logits' range: f16 within 0.5 %, bf16 with its 8-bit mantissa within 10 %).
#[test]
fn half_precision_stays_close_to_f32() {
    for r in model_references::<Reference>() {
        let path = repo_path(&r.model.dir);
        for (dtype, tolerance) in [(DType::F16, 0.005f32), (DType::BF16, 0.1)] {
            let m = models::load(&path, &Device::Cpu, dtype).unwrap();
            let (ids, mask) = batch(&r);
            let encoded = m.encode(&ids, &mask).unwrap();
            assert_eq!(encoded.dtype(), dtype);
            let mut cache = m.start_decoding(&encoded, &mask).unwrap();
            let starts = vec![r.decoder_start_token_id; r.input_ids.len()];
            let logits = step(&m, &starts, &mut cache);
            assert_eq!(logits.dtype(), DType::F32);
            for (i, want) in r.first_step_logits.iter().enumerate() {
                let range = want.iter().fold(0f32, |a, &b| a.max(b.abs()));
                let diff = max_diff(&logits_row(&logits, i), want);
                assert!(
                    diff <= tolerance * range,
                    "{} {dtype:?} input {i}: {diff} of {range}",
                    r.model.name
                );
            }
        }
    }
}
