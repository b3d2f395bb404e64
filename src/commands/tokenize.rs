//! `mtsum tokenize`: the token ids a model's tokenizer gives for each input line (or, with
//! `--decode`, the text of each line of ids). Needs only the tokenizer files of a model, so it
//! works on a folder holding just config.json and the tokenizer; this is how users debug a model
//! and how we check parity with transformers.

use std::path::{Path, PathBuf};

use clap::Args;

use super::stdout::Stdout;
use crate::cli::GlobalArgs;
use crate::commands::common::{input_name, read_utf8_inputs};
use crate::hub::{self, HubOptions};
use crate::llm::{self, GgufInfo, GgufTokenizer};
use crate::tokenize::Seq2SeqTokenizer;
use crate::Outcome;
use crate::{Error, Result};

const EXAMPLES: &str = "\
Examples:
  echo 'Полиция задержала подозреваемого.' | mtsum tokenize --model Helsinki-NLP/opus-mt-ru-en
        prints one JSON array of ids per input line, `</s>` included
  mtsum tokenize --model ./opus-mt-ru-en --target english.txt
        the target side's ids of every line of english.txt
  echo '[218, 14, 124, 0]' | mtsum tokenize --model ./opus-mt-ru-en --decode
        prints the text of each line of ids, special tokens skipped
  echo 'Полиция задержала подозреваемого.' | mtsum tokenize --model ./gemma-3-270m-q4_k_m.gguf
        a GGUF model: its own tokenizer (metadata), ids as llama.cpp's tokenize(add_bos=True)
";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct TokenizeArgs {
    /// Model whose tokenizer to use: hub id[@revision], preset name, local directory or a
    /// local .gguf file.
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// Tokenize with the target side (Marian's target.spm); the same tokenizer for T5.
    #[arg(long, conflicts_with = "decode")]
    pub target: bool,
    /// Read one JSON array of ids per line and print its text (special tokens skipped).
    #[arg(long)]
    pub decode: bool,
    /// Input files, one text (or id array) per line ("-" for stdin; stdin when none is given).
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
}

/// A tokenizer of either kind: a seq2seq model's, or the one in a GGUF file's metadata.
enum AnyTokenizer {
    Seq2Seq(Seq2SeqTokenizer),
    Gguf(GgufTokenizer),
}

pub fn execute(args: TokenizeArgs, global: &GlobalArgs) -> Result<Outcome> {
    let tokenizer = if llm::is_gguf_path(&args.model) {
        if args.target {
            return Err(Error::Usage(
                "--target: a GGUF model has one tokenizer; drop --target".into(),
            ));
        }
        // Only the header is read: the tokenizer lives in the metadata, not the weights.
        let info = GgufInfo::read(Path::new(&args.model))?;
        AnyTokenizer::Gguf(GgufTokenizer::from_gguf(&info)?)
    } else {
        // Tokenizing needs the tokenizer files and config.json, never the weights.
        let options = HubOptions {
            tokenizer_only: true,
            ..global.hub_options()
        };
        let model = hub::resolve(&args.model, &options)?;
        AnyTokenizer::Seq2Seq(Seq2SeqTokenizer::from_dir(&model.dir)?)
    };
    let mut stdout = Stdout::lock();
    let mut failed = 0;
    for (input, text) in read_utf8_inputs(&args.inputs)? {
        for (number, line) in text.lines().enumerate() {
            // As in the --lines modes: a bad line is reported and left empty, and the others go
            // on, so output line N still answers input line N.
            let written = render(&tokenizer, &args, line).unwrap_or_else(|err| {
                failed += 1;
                eprintln!("{}:{}: {err}", input_name(&input), number + 1);
                String::new()
            });
            stdout.line(&written)?;
            if stdout.closed() {
                break;
            }
        }
    }
    Ok(match failed {
        0 => Outcome::Done,
        _ => Outcome::SomeFailed,
    })
}

/// What one input line becomes: a JSON array of ids, or the decoded text.
///
/// A GGUF tokenizer gives what llama.cpp's `tokenize(text, add_bos=True, special=False)` gives:
/// BOS where the model adds it, special-token texts in the line taken as plain text.
fn render(tokenizer: &AnyTokenizer, args: &TokenizeArgs, line: &str) -> Result<String> {
    if args.decode {
        let ids: Vec<u32> = serde_json::from_str(line).map_err(|e| {
            Error::Usage(format!(
                "expected a JSON array of token ids like [12, 7, 0] ({e})"
            ))
        })?;
        return Ok(match tokenizer {
            AnyTokenizer::Seq2Seq(tokenizer) => tokenizer.decode(&ids)?,
            AnyTokenizer::Gguf(tokenizer) => tokenizer.decode(&ids),
        });
    }
    let ids = match (tokenizer, args.target) {
        (AnyTokenizer::Seq2Seq(tokenizer), true) => tokenizer.encode_target(line)?,
        (AnyTokenizer::Seq2Seq(tokenizer), false) => tokenizer.encode(line)?,
        (AnyTokenizer::Gguf(tokenizer), _) => tokenizer.encode(line, true, false)?,
    };
    Ok(serde_json::to_string(&ids).expect("a list of integers serializes"))
}
