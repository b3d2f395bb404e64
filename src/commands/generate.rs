//! `mtsum generate`: the engine's own command. It runs any supported seq2seq model on each input
//! line with the repo's generation settings (and the generation flags over them), and prints one
//! output line per input line. No segmentation, no task prefix, no guard: the surface on which
//! parity with transformers' `generate()` is checked.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use super::stdout::Stdout;
use crate::cli::GlobalArgs;
use crate::commands::common::open_runner;
use crate::commands::common::read_utf8_inputs;
use crate::generate::GenerationOverrides;
use crate::llm::{self, GenerateOptions, GgufModel};
use crate::Outcome;
use crate::{Error, Result};

const EXAMPLES: &str = "\
Examples:
  echo 'Привет, мир!' | mtsum generate --model Helsinki-NLP/opus-mt-ru-en
  mtsum generate --model ./my-t5 --beams 4 --max-length 64 docs.txt
  mtsum generate --model ./opus-mt-ru-en --ids --beams 1 sentences.txt   token ids as JSON
  mtsum generate --model ./bart --length-penalty 2.0 --no-repeat-ngram-size 3 --early-stopping -
  mtsum generate --model ./gemma-3-270m-q4_k_m.gguf --max-length 32 prompts.txt
        a GGUF LLM: the greedy continuation of each line (no chat template), BOS added as
        llama.cpp does, stopping at end-of-turn tokens; at most 20 new tokens by default

Settings not given come from the model's generation_config.json (else config.json), then from
transformers' defaults (for example at most 20 new tokens), so the same settings give the same
ids as transformers' generate().";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct GenerateArgs {
    /// Model: hub id[@revision], preset name, local directory or a local .gguf file.
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// Files whose lines are the inputs ("-" for stdin; stdin when none is given).
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Print the generated token ids (a JSON array per line, without the decoder start token).
    #[arg(long)]
    pub ids: bool,
    /// Exponent of the length in beam scores (score / length^penalty).
    #[arg(long, value_name = "F")]
    pub length_penalty: Option<f64>,
    /// Never repeat an n-gram of this size (0: off).
    #[arg(long, value_name = "N")]
    pub no_repeat_ngram_size: Option<usize>,
    /// Stop beam search once --beams hypotheses are finished (`--early-stopping false` to unset).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub early_stopping: Option<bool>,
}

impl GenerateArgs {
    fn overrides(&self, global: &GlobalArgs) -> GenerationOverrides {
        GenerationOverrides {
            num_beams: global.beams,
            max_new_tokens: global.max_length,
            min_new_tokens: global.min_length,
            length_penalty: self.length_penalty,
            no_repeat_ngram_size: self.no_repeat_ngram_size,
            early_stopping: self.early_stopping,
        }
    }
}

pub fn execute(args: GenerateArgs, global: &GlobalArgs) -> Result<Outcome> {
    let lines: Vec<String> = read_utf8_inputs(&args.inputs)?
        .iter()
        .flat_map(|(_, text)| text.lines().map(str::to_string))
        .collect();
    if llm::is_gguf_path(&args.model) {
        return execute_gguf(&args, global, &lines);
    }
    let runner = open_runner(&args.model, global)?;
    let settings = runner.resolve(&args.overrides(global))?;
    let started = Instant::now();
    let sources = runner.encode_all(&lines)?;
    let outputs = runner.generate_ids(&sources, &settings, &|_, _| {})?;
    let mut stdout = Stdout::lock();
    for ids in &outputs {
        let line = if args.ids {
            serde_json::to_string(ids).expect("ids serialize")
        } else {
            one_line(&runner.tokenizer().decode(ids)?)
        };
        stdout.line(&line)?;
        if stdout.closed() {
            break;
        }
    }
    if global.stats {
        let stats = serde_json::json!({
            "inputs": lines.len(),
            "input_tokens": sources.iter().map(Vec::len).sum::<usize>(),
            "generated_tokens": outputs.iter().map(Vec::len).sum::<usize>(),
            "seconds": started.elapsed().as_secs_f64(),
            "settings": settings,
        });
        eprintln!("{stats}");
    }
    Ok(Outcome::Done)
}

/// transformers' default budget of new tokens, kept for GGUF models so `generate` reads the same
/// for both kinds.
const GGUF_DEFAULT_NEW_TOKENS: usize = 20;

/// `generate` on a GGUF LLM: each line's ids (BOS added where the model wants it, as llama.cpp
/// does), one batched forward of the prompt, then greedy decoding on the KV cache until an
/// end-of-turn token or `--max-length` new tokens.
fn execute_gguf(args: &GenerateArgs, global: &GlobalArgs, lines: &[String]) -> Result<Outcome> {
    if global.beams.is_some_and(|beams| beams > 1)
        || args.length_penalty.is_some()
        || args.no_repeat_ngram_size.is_some()
        || args.early_stopping.is_some()
        || global.min_length.is_some()
    {
        return Err(Error::Usage(
            "a GGUF model generates greedily here: --beams, --length-penalty, \
             --no-repeat-ngram-size, --early-stopping and --min-length are for seq2seq models"
                .into(),
        ));
    }
    let (device, _) = global.load_options().open_device()?;
    let model = GgufModel::open(Path::new(&args.model), &device)?;
    let options = GenerateOptions::greedy(global.max_length.unwrap_or(GGUF_DEFAULT_NEW_TOKENS));
    let started = Instant::now();
    let (mut prompt_tokens, mut generated_tokens) = (0, 0);
    let (mut prompt_seconds, mut decode_seconds) = (0.0, 0.0);
    let mut stdout = Stdout::lock();
    for line in lines {
        let prompt = model.tokenizer().encode(line, true, false)?;
        // An empty line of a model without BOS has nothing to continue from.
        let ids = match prompt.is_empty() {
            true => Vec::new(),
            false => {
                let generation = model.generate(&prompt, &options)?;
                prompt_tokens += generation.prompt_tokens;
                generated_tokens += generation.ids.len();
                prompt_seconds += generation.prompt_time.as_secs_f64();
                decode_seconds += generation.decode_time.as_secs_f64();
                generation.ids
            }
        };
        let text = match args.ids {
            true => serde_json::to_string(&ids).expect("ids serialize"),
            false => one_line(&model.tokenizer().decode(&ids)),
        };
        stdout.line(&text)?;
        if stdout.closed() {
            break;
        }
    }
    if global.stats {
        let stats = serde_json::json!({
            "inputs": lines.len(),
            "model": model.path(),
            "architecture": model.architecture(),
            "quantization": model.quantization(),
            "input_tokens": prompt_tokens,
            "generated_tokens": generated_tokens,
            "prompt_tokens_per_second": prompt_tokens as f64 / prompt_seconds.max(1e-9),
            "generated_tokens_per_second": generated_tokens as f64 / decode_seconds.max(1e-9),
            "seconds": started.elapsed().as_secs_f64(),
        });
        eprintln!("{stats}");
    }
    Ok(Outcome::Done)
}

/// Decoded text can hold newlines; one output line per input keeps the lines aligned.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r']).collect::<Vec<_>>().join(" ")
}
