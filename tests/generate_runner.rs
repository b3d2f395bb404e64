//! The runner as the pipeline sees it (`TextGenerator`): loaded from a resolved model, text in
//! and text out in input order, the preset's input limit, clear errors for over-long inputs.

mod batch_support;

use batch_support::{model_reference, repo_path};
use candle_core::{DType, Device};
use mtsum::generate::GenerationOverrides;
use mtsum::hub::{Preset, ResolvedModel};
use mtsum::loader::{self, Role};
use mtsum::pipeline::TextGenerator;
use mtsum::progress::Silent;

fn resolved(name: &str, preset_limit: Option<usize>) -> ResolvedModel {
    ResolvedModel {
        dir: repo_path("tests/fixtures/models").join(name),
        repo: name.to_string(),
        revision: None,
        commit: None,
        preset: preset_limit.map(|limit| Preset {
            name: "test".into(),
            max_input_tokens: Some(limit),
            ..Default::default()
        }),
    }
}

fn load(
    name: &str,
    preset_limit: Option<usize>,
    batch_tokens: Option<usize>,
) -> impl TextGenerator {
    loader::load(
        &resolved(name, preset_limit),
        &Device::Cpu,
        DType::F32,
        batch_tokens,
        Role::Generate,
        &Silent,
    )
    .unwrap()
}

#[test]
fn generates_the_reference_texts_in_input_order_whatever_the_batches() {
    let reference = model_reference("marian_tiny");
    let texts: Vec<String> = serde_json::from_value(reference["texts"].clone()).unwrap();
    let texts: Vec<String> = texts.into_iter().filter(|t| !t.is_empty()).collect();
    let overrides = GenerationOverrides {
        num_beams: Some(4),
        ..Default::default()
    };
    // A budget of one input per batch and one of everything give the same outputs.
    let small = load("marian_tiny", None, Some(1)).generate(&texts, &overrides, &|_, _| {});
    let large = load("marian_tiny", None, None).generate(&texts, &overrides, &|_, _| {});
    let (small, large) = (small.unwrap(), large.unwrap());
    assert_eq!(small, large);
    assert_eq!(small.len(), texts.len());
    assert!(small
        .iter()
        .all(|g| g.input_tokens > 0 && g.output_tokens > 0));
    let distinct: std::collections::HashSet<&String> = small.iter().map(|g| &g.text).collect();
    assert!(
        distinct.len() > 1,
        "different inputs give different outputs"
    );
}

#[test]
fn progress_reaches_the_total_and_empty_inputs_stay_empty() {
    let generator = load("t5_tiny", None, Some(1));
    let inputs = vec![
        "Полиция задержала подозреваемого.".to_string(),
        "  ".to_string(),
    ];
    let seen = std::sync::Mutex::new(Vec::new());
    let out = generator
        .generate(&inputs, &GenerationOverrides::default(), &|done, total| {
            seen.lock().unwrap().push((done, total))
        })
        .unwrap();
    assert_eq!(out[1].text, "");
    assert_eq!(out[1].output_tokens, 0);
    assert!(!out[0].text.is_empty());
    assert_eq!(seen.into_inner().unwrap().last(), Some(&(2, 2)));
}

#[test]
fn the_preset_lowers_the_input_limit_and_long_inputs_are_named() {
    let own = load("marian_tiny", None, None).max_input_tokens();
    let generator = load("marian_tiny", Some(6), None);
    assert!(own > 6);
    assert_eq!(generator.max_input_tokens(), 6);
    let inputs = vec![
        "Полиция".to_string(),
        "Сотрудники полиции задержали подозреваемого в краже".to_string(),
    ];
    let err = generator
        .generate(&inputs, &GenerationOverrides::default(), &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input 2 has") && err.contains("at most 6"),
        "{err}"
    );
}

#[test]
fn settings_and_info_describe_the_run() {
    let generator = load("marian_tiny", None, None);
    let info = generator.info();
    assert_eq!(
        (
            info.family.as_str(),
            info.dtype.as_str(),
            info.device.as_str()
        ),
        ("marian", "f32", "cpu")
    );
    let overrides = GenerationOverrides {
        num_beams: Some(3),
        max_new_tokens: Some(7),
        ..Default::default()
    };
    let settings = generator.settings(&overrides);
    assert_eq!(settings["num_beams"], 3);
    assert_eq!(settings["max_new_tokens"], 7);
    assert!(generator.count_tokens("Полиция").unwrap() >= 2);
}
