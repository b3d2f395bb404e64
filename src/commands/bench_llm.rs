//! `mtsum bench --summarizer <GGUF>`: prompt processing and generation speed of the LLM engine,
//! kept apart from the seq2seq bench in `bench.rs`. Each prompt is fed in one batched forward
//! (as a release's prompt is), then exactly `--new-tokens` tokens are generated greedily, the
//! end token not stopping them, so random weights do the same work as trained ones and
//! scripts/bench_llm.py can give llama.cpp the same work on the same file.

use std::time::Instant;

use super::bench::BenchArgs;
use super::stdout::Stdout;
use crate::cli::GlobalArgs;
use crate::commands::allocator;
use crate::llm::{GenerateOptions, GgufModel};
use crate::Outcome;
use crate::{Error, Result};

/// The prompt when no --input is given: the body of a sample release (our own writing), as
/// long as a typical release.
const DEFAULT_PROMPT: &str = include_str!("../../samples/01-interpol-data-exchange.txt");

/// What one LLM bench measured; the fastest of `--repeat` runs counts.
#[derive(Debug, serde::Serialize)]
struct LlmFigures {
    mode: &'static str,
    backend: String,
    quantization: String,
    prompts: usize,
    prompt_tokens: usize,
    prompt_seconds: f64,
    prompt_tokens_per_s: f64,
    generated_tokens: usize,
    generate_seconds: f64,
    generated_tokens_per_s: f64,
    /// The first greedy ids of the first prompt: the same file in another engine must start
    /// with the same ones (scripts/bench_llm.py compares them).
    first_ids: Vec<u32>,
}

/// Runs the LLM bench on the GGUF `spec`.
pub fn execute(spec: &str, args: &BenchArgs, global: &GlobalArgs) -> Result<Outcome> {
    if args.new_tokens == 0 || args.repeat == 0 {
        return Err(Error::Usage(
            "--new-tokens and --repeat must be at least 1".into(),
        ));
    }
    let options = global.load_options();
    let (device, _) = options.open_device()?;
    let resolved = crate::hub::resolve_gguf(spec, &options.hub)?;
    let model = allocator::loading(&device, || {
        GgufModel::open_with_tokenizer(&resolved.path, resolved.tokenizer_json.as_deref(), &device)
    })?;
    let prompts: Vec<String> = match &args.input {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, e))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
        None => vec![DEFAULT_PROMPT
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")],
    };
    if prompts.is_empty() {
        return Err(Error::Usage("mtsum bench: the input has no lines".into()));
    }
    // Raw text, BOS first, as llama.cpp's tokenize(add_bos) gives it: no chat template, so
    // the two engines see the same ids.
    let ids = (prompts.iter())
        .map(|p| model.tokenizer().encode(p, true, false))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let greedy = GenerateOptions {
        // No stop token: exactly --new-tokens each.
        stop_ids: Some(Vec::new()),
        ..GenerateOptions::greedy(args.new_tokens)
    };
    // Warm-up: page the weights in.
    model.generate(&ids[0][..ids[0].len().min(8)], &GenerateOptions::greedy(2))?;
    let (mut prompt_best, mut generate_best) = (f64::INFINITY, f64::INFINITY);
    let (mut generated, mut first_ids) = (0, Vec::new());
    for _ in 0..args.repeat {
        let (mut prompt_seconds, mut generate_seconds) = (0.0, 0.0);
        generated = 0;
        for (n, prompt) in ids.iter().enumerate() {
            let mut session = model.session();
            let started = Instant::now();
            session.feed(prompt)?;
            prompt_seconds += started.elapsed().as_secs_f64();
            let started = Instant::now();
            let out = session.generate(&greedy, &mut |_| {})?;
            generate_seconds += started.elapsed().as_secs_f64();
            generated += out.ids.len();
            if n == 0 {
                first_ids = out.ids.iter().take(16).copied().collect();
            }
        }
        prompt_best = prompt_best.min(prompt_seconds);
        generate_best = generate_best.min(generate_seconds);
    }
    let prompt_tokens = ids.iter().map(Vec::len).sum();
    let figures = LlmFigures {
        mode: "llm",
        backend: crate::loader::backend_name(&format!("{:?}", model.family()).to_lowercase()),
        quantization: model.quantization(),
        prompts: ids.len(),
        prompt_tokens,
        prompt_seconds: prompt_best,
        prompt_tokens_per_s: prompt_tokens as f64 / prompt_best,
        generated_tokens: generated,
        generate_seconds: generate_best,
        generated_tokens_per_s: generated as f64 / generate_best,
        first_ids,
    };
    let mut stdout = Stdout::lock();
    if args.json {
        return stdout
            .line(&serde_json::to_string(&figures).expect("figures serialize"))
            .map(|()| Outcome::Done);
    }
    stdout.line(&format!(
        "{} {} ({}): prompt {} tokens in {:.2} s = {:.1} tokens/s; generation {} tokens in {:.2} s = {:.1} tokens/s",
        resolved.file,
        figures.quantization,
        figures.backend,
        figures.prompt_tokens,
        figures.prompt_seconds,
        figures.prompt_tokens_per_s,
        figures.generated_tokens,
        figures.generate_seconds,
        figures.generated_tokens_per_s,
    ))?;
    Ok(Outcome::Done)
}
