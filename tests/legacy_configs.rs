//! Legacy configuration keys (distilbart-cnn-12-6's traits) against transformers 5.24: a BART with
//! generation keys only in config.json, `force_bos_token_to_be_generated`, no forced_eos_token_id,
//! `prefix` and `task_specific_params.summarization`, and vocab.json + merges.txt instead of
//! tokenizer.json (tests/fixtures/models/bart_legacy, reference/legacy/bart_legacy.json, made by
//! tests/fixtures/make_tokcfg.py).

mod batch_support;

use std::path::PathBuf;

use assert_cmd::Command;
use batch_support::parity::expected;
use batch_support::{read_json, repo_path};
use candle_core::{DType, Device};
use mtsum::generate::{
    generate_batch, GenerationConfig, GenerationOverrides, Origin, Seq2Seq, TaskDefaults,
};
use mtsum::hub::ResolvedModel;
use mtsum::loader::{self, Role};
use mtsum::pipeline::TextGenerator;
use mtsum::progress::Silent;
use mtsum::tokenize::Seq2SeqTokenizer;
use serde_json::Value;

const DIR: &str = "tests/fixtures/models/bart_legacy";

fn reference() -> Value {
    read_json("tests/fixtures/reference/legacy/bart_legacy.json")
}

fn case<'a>(reference: &'a Value, name: &str) -> &'a Value {
    let cases = reference["generate"].as_array().unwrap();
    cases.iter().find(|c| c["name"] == name).unwrap()
}

fn texts(reference: &Value) -> Vec<String> {
    serde_json::from_value(reference["texts"].clone()).unwrap()
}

/// The case's keyword arguments as the flags that give them.
fn flags(case: &Value) -> GenerationOverrides {
    let kwargs = &case["kwargs"];
    let n = |k: &str| kwargs.get(k).map(|v| v.as_u64().unwrap() as usize);
    assert!(
        kwargs
            .as_object()
            .unwrap()
            .keys()
            .all(|k| k == "num_beams" || k == "max_new_tokens"),
        "only these kwargs have flags here"
    );
    GenerationOverrides {
        num_beams: n("num_beams"),
        max_new_tokens: n("max_new_tokens"),
        ..Default::default()
    }
}

fn model() -> mtsum::models::AnyModel {
    mtsum::models::load(&repo_path(DIR), &Device::Cpu, DType::F32).unwrap()
}

#[test]
fn generate_derives_transformers_settings_from_legacy_config_keys() {
    let reference = reference();
    let dir = repo_path(DIR);
    let model = model();
    let tokenizer = Seq2SeqTokenizer::from_dir(&dir).unwrap();
    let config = GenerationConfig::from_dir(&dir).unwrap();
    for name in ["generate", "generate_with_kwargs"] {
        let case = case(&reference, name);
        let settings = config
            .resolve(
                &flags(case),
                model.special_tokens(),
                model.max_source_positions(),
            )
            .unwrap();
        let effective = &case["effective"];
        // force_bos_token_to_be_generated -> forced_bos_token_id = bos_token_id; BartConfig's class
        // default forced_eos_token_id = 2 does not apply to a config.json that lacks it
        assert_eq!(settings.forced_bos_token_id, Some(0), "{name}");
        assert!(effective["forced_eos_token_id"].is_null(), "{name}");
        assert!(settings.forced_eos_token_id.is_empty(), "{name}");
        assert_eq!(
            settings.num_beams as u64,
            effective["num_beams"].as_u64().unwrap()
        );
        assert_eq!(
            settings.length_penalty,
            effective["length_penalty"].as_f64().unwrap()
        );
        assert_eq!(
            settings.min_new_tokens as u64,
            effective["min_length"].as_u64().unwrap() - 1
        );
        let sources: Vec<Vec<u32>> = texts(&reference)
            .iter()
            .map(|t| tokenizer.encode(t).unwrap())
            .collect();
        let batch: Vec<&[u32]> = sources.iter().map(Vec::as_slice).collect();
        let got = generate_batch(&model, &settings, &batch, &Device::Cpu).unwrap();
        assert_eq!(
            got,
            expected(case),
            "{name}: ids differ from transformers' generate()"
        );
    }
}

fn resolved() -> ResolvedModel {
    ResolvedModel {
        dir: repo_path(DIR),
        repo: DIR.to_string(),
        revision: None,
        commit: None,
        preset: None,
    }
}

#[test]
fn as_summarizer_task_specific_params_and_prefix_apply_below_the_flags() {
    let reference = reference();
    let tokenizer = Seq2SeqTokenizer::from_dir(&repo_path(DIR)).unwrap();
    let summarizer = loader::load(
        &resolved(),
        &Device::Cpu,
        DType::F32,
        None,
        Role::Summarizer,
        &Silent,
    )
    .unwrap();
    assert_eq!(summarizer.prefix(), Some(" "));
    let texts = texts(&reference);
    for name in [
        "summarization_pipeline",
        "summarization_pipeline_with_kwargs",
    ] {
        let case = case(&reference, name);
        assert_eq!(case["prefix"], " ");
        let overrides = flags(case);
        let outputs = summarizer.generate(&texts, &overrides, &|_, _| {}).unwrap();
        let want = expected(case);
        for (i, output) in outputs.iter().enumerate() {
            let want_text = tokenizer.decode(&want[i]).unwrap();
            assert_eq!(output.text, want_text, "{name}: input {i}");
            assert_eq!(output.output_tokens, want[i].len(), "{name}: input {i}");
            let prefixed = tokenizer.encode(&format!(" {}", texts[i])).unwrap().len();
            assert_eq!(
                output.input_tokens, prefixed,
                "{name}: the prefix is part of the input"
            );
        }
        let settings = summarizer.resolve(&overrides).unwrap();
        let effective = &case["effective"];
        assert_eq!(
            settings.num_beams as u64,
            effective["num_beams"].as_u64().unwrap()
        );
        assert_eq!(
            settings.length_penalty,
            effective["length_penalty"].as_f64().unwrap()
        );
        assert_eq!(
            settings.no_repeat_ngram_size as u64,
            effective["no_repeat_ngram_size"].as_u64().unwrap()
        );
    }
    // where each setting came from: flags over task_specific_params over config.json
    let origins = summarizer
        .setting_origins(&GenerationOverrides {
            num_beams: Some(2),
            ..Default::default()
        })
        .unwrap();
    let origin = |name: &str| origins.iter().find(|o| o.setting == name).unwrap().origin;
    assert_eq!(origin("num_beams"), Origin::Flag);
    assert_eq!(origin("length_penalty"), Origin::TaskSpecificParams);
    assert_eq!(origin("max_new_tokens"), Origin::TaskSpecificParams);
    assert_eq!(origin("forced_bos_token_id"), Origin::ConfigJson);
    assert_eq!(origin("forced_eos_token_id"), Origin::TransformersDefault);
    assert_eq!(origin("renormalize_logits"), Origin::TransformersDefault);
    assert_eq!(origin("decoder_start_token_id"), Origin::ConfigJson);
}

#[test]
fn plain_generate_ignores_task_specific_params_and_prefix() {
    let plain = loader::load(
        &resolved(),
        &Device::Cpu,
        DType::F32,
        None,
        Role::Generate,
        &Silent,
    )
    .unwrap();
    assert_eq!(plain.prefix(), None);
    let origins = plain
        .setting_origins(&GenerationOverrides::default())
        .unwrap();
    for o in &origins {
        assert_ne!(o.origin, Origin::TaskSpecificParams, "{o:?}");
    }
    let beams = origins.iter().find(|o| o.setting == "num_beams").unwrap();
    assert_eq!(
        (beams.value.as_u64(), beams.origin),
        (Some(4), Origin::ConfigJson)
    );
    let task = TaskDefaults::summarization(&repo_path(DIR)).unwrap();
    assert_eq!(task.generation.num_beams, Some(3));
}

#[test]
fn mtsum_generate_on_the_legacy_folder_gives_transformers_ids() {
    let reference = reference();
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), texts(&reference).join("\n") + "\n").unwrap();
    let dir: PathBuf = repo_path(DIR);
    let out = Command::cargo_bin("mtsum")
        .unwrap()
        .args(["--device", "cpu", "generate", "--ids", "--model"])
        .arg(&dir)
        .arg(input.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Vec<u32>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, expected(case(&reference, "generate")));
}
