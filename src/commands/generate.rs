//! `mtsum generate`: the engine's own command. It runs any supported seq2seq model on each input
//! line with the repo's generation settings (and the generation flags over them), and prints one
//! output line per input line. No segmentation, no task prefix, no guard: the surface on which
//! parity with transformers' `generate()` is checked.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::stdout::Stdout;
use crate::cli::GlobalArgs;
use crate::commands::common::open_runner;
use crate::commands::common::read_utf8_inputs;
use crate::generate::GenerationOverrides;
use crate::Outcome;
use crate::Result;

const EXAMPLES: &str = "\
Examples:
  echo 'Привет, мир!' | mtsum generate --model Helsinki-NLP/opus-mt-ru-en
  mtsum generate --model ./my-t5 --beams 4 --max-length 64 docs.txt
  mtsum generate --model ./opus-mt-ru-en --ids --beams 1 sentences.txt   token ids as JSON
  mtsum generate --model ./bart --length-penalty 2.0 --no-repeat-ngram-size 3 --early-stopping -

Settings not given come from the model's generation_config.json (else config.json), then from
transformers' defaults (for example at most 20 new tokens), so the same settings give the same
ids as transformers' generate().";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct GenerateArgs {
    /// Model: hub id[@revision], preset name or local directory.
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

/// Decoded text can hold newlines; one output line per input keeps the lines aligned.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r']).collect::<Vec<_>>().join(" ")
}
