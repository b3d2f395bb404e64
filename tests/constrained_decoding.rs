//! Lexically constrained decoding (issue 13) on the tiny Marian fixtures, trained (marian_tiny,
//! marian_deep) and random (marian_long, at the engine: it has no tokenizer):
//! every constraint (a glossary term's English side as the target tokenizer encodes it) is in
//! the output under greedy and beam settings; inputs without constraints get exactly the ids
//! of a run without any, alone and in padded batches; constraints that cannot fit within the
//! length limit fall back to the unconstrained output and say so.

mod batch_support;

use batch_support::{model_reference, repo_path};
use candle_core::{DType, Device};
use mtsum::generate::{generate_constrained, GenerationConfig, GenerationOverrides, Runner};
use mtsum::hub::ResolvedModel;
use mtsum::loader::{self, Role};
use mtsum::models::AnyModel;
use mtsum::progress::Silent;

fn load(name: &str, batch_tokens: Option<usize>) -> Runner<AnyModel> {
    let resolved = ResolvedModel {
        dir: repo_path("tests/fixtures/models").join(name),
        repo: name.to_string(),
        revision: None,
        commit: None,
        preset: None,
    };
    let role = Role::Generate;
    loader::load(
        &resolved,
        &Device::Cpu,
        DType::F32,
        batch_tokens,
        role,
        &Silent,
    )
    .unwrap()
}

fn texts() -> Vec<String> {
    let reference = model_reference("marian_tiny");
    let texts: Vec<String> = serde_json::from_value(reference["texts"].clone()).unwrap();
    texts.into_iter().filter(|t| !t.trim().is_empty()).collect()
}

/// English terms whose pieces the tiny vocabularies hold (no unknown token).
const TERMS: [&str; 4] = ["Ministry", "criminal police", "the Ministry of", "police"];

/// Per input: none for every third input, else one or two of [`TERMS`].
fn terms_for(count: usize) -> Vec<Vec<String>> {
    (0..count)
        .map(|i| match i % 3 {
            0 => vec![],
            1 => vec![TERMS[i % 4].to_string()],
            _ => vec![TERMS[i % 4].to_string(), TERMS[(i + 1) % 4].to_string()],
        })
        .collect()
}

fn contains(haystack: &[u32], needle: &[u32]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn overrides(beams: usize, max_new_tokens: Option<usize>) -> GenerationOverrides {
    GenerationOverrides {
        num_beams: Some(beams),
        max_new_tokens,
        ..Default::default()
    }
}

/// A random-weight Marian (opus-mt layout, vocabulary 751) loops on a few tokens; constraints of
/// tokens it rarely picks are placed all the same, greedy and with beams, and an input's output
/// is the same alone and in a batch.
#[test]
fn a_random_marian_places_constraints_of_any_tokens_alone_and_in_a_batch() {
    let reference: serde_json::Value =
        batch_support::read_json("tests/fixtures/reference/long_beams.json");
    let entry = &reference["models"]["marian_long"];
    let dir = repo_path(entry["dir"].as_str().unwrap());
    let model = mtsum::models::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let sources: Vec<Vec<u32>> = (entry["inputs"].as_array().unwrap().iter().take(4))
        .map(|i| serde_json::from_value(i["input_ids"].clone()).unwrap())
        .collect();
    let batch: Vec<&[u32]> = sources.iter().map(Vec::as_slice).collect();
    let constraints: Vec<Vec<Vec<u32>>> = vec![
        vec![vec![340, 119]],
        vec![vec![714], vec![5, 6, 7]],
        vec![vec![42]],
        vec![vec![590, 590], vec![300]],
    ];
    for beams in [1, 4] {
        let config = GenerationConfig::from_dir(&dir).unwrap();
        let settings = config
            .resolve(
                &overrides(beams, Some(24)),
                mtsum::generate::Seq2Seq::special_tokens(&model),
                mtsum::generate::Seq2Seq::max_source_positions(&model),
            )
            .unwrap();
        let together =
            generate_constrained(&model, &settings, &batch, &constraints, &[], &Device::Cpu)
                .unwrap();
        for (i, out) in together.iter().enumerate() {
            let ids = out
                .as_ref()
                .unwrap_or_else(|| panic!("{beams} beams, input {i}: constraints not placed"));
            for c in &constraints[i] {
                assert!(
                    contains(ids, c),
                    "{beams} beams, input {i}: {c:?} not in {ids:?}"
                );
            }
            let alone = generate_constrained(
                &model,
                &settings,
                &batch[i..=i],
                &constraints[i..=i],
                &[],
                &Device::Cpu,
            )
            .unwrap();
            assert_eq!(alone[0].as_ref(), Some(ids), "{beams} beams, input {i}");
        }
    }
}

#[test]
fn every_constraint_is_placed_and_inputs_without_any_keep_their_ids() {
    let texts = texts();
    let terms = terms_for(texts.len());
    for name in ["marian_tiny", "marian_deep"] {
        // One input per batch, and everything in one padded batch.
        let (narrow, wide) = (load(name, Some(1)), load(name, None));
        let unk = wide.tokenizer().unk_id();
        let sources = wide.encode_all(&texts).unwrap();
        let constraints: Vec<Vec<Vec<u32>>> = (terms.iter())
            .map(|ts| {
                ts.iter()
                    .map(|t| wide.encode_constraint(t).unwrap())
                    .collect()
            })
            .collect();
        for c in constraints.iter().flatten() {
            assert!(!c.is_empty() && !c.contains(&unk), "{name}: {c:?}");
        }
        for beams in [1, 4] {
            let settings = wide.resolve(&overrides(beams, None)).unwrap();
            let plain = wide.generate_ids(&sources, &settings, &|_, _| {}).unwrap();
            let out =
                (wide.generate_ids_constrained(&sources, &constraints, &settings, &|_, _| {}))
                    .unwrap();
            let alone =
                (narrow.generate_ids_constrained(&sources, &constraints, &settings, &|_, _| {}))
                    .unwrap();
            assert_eq!(out, alone, "{name}, {beams} beams: batches change nothing");
            let mut changed = 0;
            for (i, ((ids, placed), cs)) in out.iter().zip(&constraints).enumerate() {
                if cs.is_empty() {
                    assert!(!placed);
                    assert_eq!(ids, &plain[i], "{name}, {beams} beams: input {i} untouched");
                    continue;
                }
                assert!(placed, "{name}, {beams} beams: input {i} placed {cs:?}");
                for c in cs {
                    assert!(contains(ids, c), "{name}, {beams} beams: {c:?} in {ids:?}");
                }
                let text = wide.tokenizer().decode(ids).unwrap();
                for term in &terms[i] {
                    let whole = mtsum::text::glossary::holds(&text, term);
                    assert!(whole, "{name}: {term:?} in {text:?}");
                }
                changed += usize::from(ids != &plain[i]);
            }
            assert!(
                changed > 0,
                "{name}, {beams} beams: the constraints changed outputs"
            );
            // Texts: the same through the text interface.
            let generated = (wide.generate_texts_constrained(
                &texts,
                &terms,
                &overrides(beams, None),
                &|_, _| {},
            ))
            .unwrap();
            for (g, (ids, _)) in generated.iter().zip(&out) {
                assert_eq!(g.text, wide.tokenizer().decode(ids).unwrap());
            }
        }
    }
}

#[test]
fn constraints_that_cannot_fit_keep_the_unconstrained_output() {
    let texts = texts();
    let runner = load("marian_tiny", None);
    let sources = runner.encode_all(&texts[..3]).unwrap();
    let long = runner
        .encode_constraint("the Ministry of criminal police")
        .unwrap();
    assert!(long.len() > 3, "{long:?}");
    let constraints = vec![vec![long.clone()], vec![], vec![long]];
    for beams in [1, 4] {
        let settings = runner.resolve(&overrides(beams, Some(3))).unwrap();
        let plain = runner
            .generate_ids(&sources, &settings, &|_, _| {})
            .unwrap();
        let out = (runner.generate_ids_constrained(&sources, &constraints, &settings, &|_, _| {}))
            .unwrap();
        let expected: Vec<(Vec<u32>, bool)> = plain.into_iter().map(|ids| (ids, false)).collect();
        assert_eq!(out, expected, "{beams} beams");
    }
}

const TERMS_TSV: &str = "Министерство внутренних дел\tthe Ministry of\nполиция\tcriminal police\n";

const WITH_TERMS: &str = "Итоги\n\nМинистерство внутренних дел сообщило о задержании. \
Сотрудники полиции задержали подозреваемого. Суд вынес приговор.\n";

const WITHOUT_TERMS: &str = "Новости\n\nСуд вынес приговор. Расследование продолжается.\n";

/// `mtsum run --no-summary` with the tiny Marian over both releases, with or without the
/// glossary; `--beams` when given.
fn run_cli(
    input: &std::path::Path,
    glossary: Option<&std::path::Path>,
    beams: Option<&str>,
) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = assert_cmd::Command::cargo_bin("mtsum").unwrap();
    cmd.arg("--translator")
        .arg(repo_path("tests/fixtures/models/marian_tiny"));
    cmd.args(["--device", "cpu", "--max-length", "24"]);
    if let Some(beams) = beams {
        cmd.args(["--beams", beams]);
    }
    cmd.args(["run", "--no-summary", "--out"])
        .arg(out.path())
        .arg(input);
    if let Some(glossary) = glossary {
        cmd.arg("--glossary").arg(glossary);
    }
    cmd.assert().code(0);
    out
}

fn sentences(out: &std::path::Path, id: &str) -> Vec<mtsum::io::Bilingual> {
    let output = batch_support::read_output(out, id);
    output
        .paragraphs
        .into_iter()
        .flat_map(|p| p.sentences)
        .collect()
}

#[test]
fn run_with_a_glossary_enforces_its_terms_and_leaves_other_sentences_alone() {
    let input = tempfile::tempdir().unwrap();
    std::fs::write(input.path().join("terms.txt"), WITH_TERMS).unwrap();
    std::fs::write(input.path().join("plain.txt"), WITHOUT_TERMS).unwrap();
    let glossary = input.path().join("glossary.tsv");
    std::fs::write(&glossary, TERMS_TSV).unwrap();
    let docs = input.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    for file in ["terms.txt", "plain.txt"] {
        std::fs::rename(input.path().join(file), docs.join(file)).unwrap();
    }
    for beams in [None, Some("3")] {
        let without = run_cli(&docs, None, beams);
        let with = run_cli(&docs, Some(&glossary), beams);
        let (plain_before, plain_after) = (
            sentences(without.path(), "plain"),
            sentences(with.path(), "plain"),
        );
        let en = |s: &[mtsum::io::Bilingual]| s.iter().map(|s| s.en.clone()).collect::<Vec<_>>();
        assert_eq!(
            en(&plain_after),
            en(&plain_before),
            "{beams:?}: no terms, same text"
        );
        let (before, after) = (
            sentences(without.path(), "terms"),
            sentences(with.path(), "terms"),
        );
        assert_eq!(after.len(), 3);
        for (i, sentence) in after.iter().enumerate() {
            if sentence.terms.is_empty() {
                assert_eq!(
                    sentence.en, before[i].en,
                    "{beams:?}: sentence {i} untouched"
                );
            }
            for term in &sentence.terms {
                assert!(term.met, "{beams:?}: {term:?} in {:?}", sentence.en);
                assert!(sentence.en.contains(&term.en), "{:?}", sentence.en);
            }
        }
        assert_eq!(after[0].terms.len(), 1);
        assert_eq!(after[1].terms.len(), 1);
        assert!(after[2].terms.is_empty());
        let report = batch_support::read_report(with.path());
        assert_eq!(report["terms"]["misses"], 0, "{report}");
        assert_eq!(report["terms"]["hits"], 2, "{report}");
    }
}

/// A translator that enforces constraints by appending each one its stand-in output lacks,
/// and records every constrained call's inputs with their constraints.
struct Enforcing {
    inner: batch_support::standin::StandIn,
    constrained: std::sync::Mutex<Vec<(String, Vec<String>)>>,
}

impl mtsum::pipeline::TextGenerator for Enforcing {
    fn info(&self) -> &mtsum::generate::ModelInfo {
        self.inner.info()
    }
    fn count_tokens(&self, text: &str) -> mtsum::Result<usize> {
        self.inner.count_tokens(text)
    }
    fn max_input_tokens(&self) -> usize {
        self.inner.max_input_tokens()
    }
    fn settings(&self, overrides: &GenerationOverrides) -> serde_json::Value {
        self.inner.settings(overrides)
    }
    fn generate(
        &self,
        inputs: &[String],
        overrides: &GenerationOverrides,
        progress: &dyn Fn(usize, usize),
    ) -> mtsum::Result<Vec<mtsum::generate::Generated>> {
        self.inner.generate(inputs, overrides, progress)
    }
    fn generate_constrained(
        &self,
        inputs: &[String],
        constraints: &[Vec<String>],
        overrides: &GenerationOverrides,
        progress: &dyn Fn(usize, usize),
    ) -> mtsum::Result<Vec<mtsum::generate::Generated>> {
        let mut outputs = self.inner.generate(inputs, overrides, progress)?;
        let mut seen = self.constrained.lock().unwrap();
        for ((output, input), terms) in outputs.iter_mut().zip(inputs).zip(constraints) {
            seen.push((input.clone(), terms.clone()));
            for term in terms {
                if !mtsum::text::glossary::holds(&output.text, term) {
                    output.text = format!("{} {term}", output.text);
                }
            }
        }
        Ok(outputs)
    }
}

#[test]
fn the_pipeline_constrains_only_sentences_that_lack_a_term_and_the_summary_too() {
    use batch_support::standin::StandIn;
    use mtsum::pipeline::TextGenerator;
    let input = tempfile::tempdir().unwrap();
    std::fs::write(
        input.path().join("terms.txt"),
        "Итоги\n\nИнтерпол и Министерство внутренних дел подписали соглашение. \
         Расследование продолжается. Интерпол доволен.\n",
    )
    .unwrap();
    let glossary =
        "Интерпол\tInterpol\nМинистерство внутренних дел\tMinistry of Internal Affairs\n";
    let translator = Enforcing {
        inner: StandIn::translator(),
        constrained: Default::default(),
    };
    let summarizer = StandIn::summarizer();
    let mut options = batch_support::run_options(false);
    options.glossary = mtsum::text::glossary::Glossary::parse("terms.tsv", glossary).unwrap();
    let pipeline =
        mtsum::pipeline::Pipeline::new(Some(&translator), Some(&summarizer), options).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = mtsum::io::OutputDir::create(out.path()).unwrap();
    let items = batch_support::read_items(&[input.path().to_path_buf()]);
    let options = mtsum::pipeline::batch::BatchOptions::default();
    let report = mtsum::pipeline::batch::run(&pipeline, items, &dir, &options, &Silent).unwrap();
    let expected = mtsum::pipeline::batch::TermCounts { hits: 3, misses: 0 };
    assert_eq!(report.terms, Some(expected));

    let output = batch_support::read_output(out.path(), "terms");
    let sentences: Vec<_> = output
        .paragraphs
        .iter()
        .flat_map(|p| &p.sentences)
        .collect();
    assert!(sentences.iter().flat_map(|s| &s.terms).all(|t| t.met));
    // Only the first sentence lacked a term (the stand-in writes "Interpol" itself): it was
    // constrained with both of its terms, once in the body and once as the summary (the
    // stand-in's lead sentence). The sentence without terms is the stand-in's own.
    let seen = translator.constrained.lock().unwrap().clone();
    let first = "Интерпол и Министерство внутренних дел подписали соглашение.";
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (input, terms) in &seen {
        assert_eq!(input, first);
        assert_eq!(terms, &["Interpol", "Ministry of Internal Affairs"]);
    }
    let plain = StandIn::translator()
        .generate(
            &["Расследование продолжается.".to_string()],
            &Default::default(),
            &|_, _| {},
        )
        .unwrap();
    assert_eq!(sentences[1].en, plain[0].text.trim());
    // The summary (the stand-in's lead sentence) holds the ministry, and so does its English.
    let summary = output.summary.expect("a summary");
    assert!(
        summary.ru.contains("Министерство внутренних дел"),
        "{}",
        summary.ru
    );
    assert!(
        mtsum::text::glossary::holds(&summary.en, "Ministry of Internal Affairs"),
        "{}",
        summary.en
    );
}

/// stdout of `mtsum ARGS [--glossary G]` with the tiny Marian as translator on the CPU (24 new
/// tokens at most), which must exit 0.
fn stdout_of_tiny(args: &[&str], glossary: Option<&std::path::Path>, stdin: &str) -> String {
    let mut cmd = assert_cmd::Command::cargo_bin("mtsum").unwrap();
    cmd.arg("--translator")
        .arg(repo_path("tests/fixtures/models/marian_tiny"))
        .args(["--device", "cpu", "--max-length", "24"])
        .args(args);
    if let Some(glossary) = glossary {
        cmd.arg("--glossary").arg(glossary);
    }
    let output = cmd
        .write_stdin(stdin)
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    String::from_utf8(output).unwrap()
}

#[test]
fn translate_lines_enforces_the_glossary_without_out() {
    let dir = tempfile::tempdir().unwrap();
    let glossary = dir.path().join("glossary.tsv");
    std::fs::write(&glossary, TERMS_TSV).unwrap();
    let lines = "Сотрудники полиции задержали подозреваемого.\nСуд вынес приговор.\n";
    let translate = |glossary: Option<&std::path::Path>| {
        let text = stdout_of_tiny(&["translate", "--lines"], glossary, lines);
        text.lines().map(str::to_string).collect::<Vec<_>>()
    };
    let (without, with) = (translate(None), translate(Some(&glossary)));
    assert_eq!(with.len(), 2);
    assert!(
        mtsum::text::glossary::holds(&with[0], "criminal police"),
        "{with:?}"
    );
    assert_eq!(with[1], without[1], "a line without terms is unchanged");
}

#[test]
fn a_missing_number_is_constrained_and_the_warning_says_so() {
    let input = tempfile::tempdir().unwrap();
    let docs = input.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(
        docs.join("numbers.txt"),
        "Итоги\n\nЗадержаны 15 человек. Изъято 30 единиц оружия. Суд вынес приговор.\n",
    )
    .unwrap();
    let out = run_cli(&docs, None, None);
    let sentences = sentences(out.path(), "numbers");
    // Each number is in the translation, or the warning says the constrained search could
    // not give it (the random fixture may loop inside a word around it, and the guard refuses
    // such a translation).
    let mut constrained = 0;
    for (sentence, number) in sentences.iter().zip(["15", "30"]) {
        let held = mtsum::text::numbers::contains_form(&sentence.en, number);
        let missing = format!("number \"{number}\" was missing from the translation; ");
        let expected = match held {
            true => format!("{missing}constrained to \"{number}\""),
            false => format!("{missing}still missing when constrained to \"{number}\""),
        };
        match sentence.warnings.as_slice() {
            [] => assert!(held, "{number} in {:?}", sentence.en),
            [warning] => assert_eq!(warning, &expected, "{:?}", sentence.en),
            more => panic!("{more:?}"),
        }
        constrained += usize::from(held && !sentence.warnings.is_empty());
    }
    assert!(
        constrained > 0,
        "the random fixture drops a number: {sentences:?}"
    );
    assert!(sentences[2].warnings.is_empty());
    let report = batch_support::read_report(out.path());
    assert_eq!(
        report["counts"]["needs_review"], 1,
        "a warning is for review"
    );
}

#[test]
fn names_transliterate_constrains_names_the_translation_does_not_transliterate() {
    use batch_support::standin::StandIn;
    let input = tempfile::tempdir().unwrap();
    std::fs::write(
        input.path().join("names.txt"),
        "Итоги\n\nОб этом сообщила Ирина Волк. Соглашение подписано И. П. Карташовым. \
         Письмо получил Ю. Шток.\n",
    )
    .unwrap();
    let run = |transliterate: bool| {
        let translator = Enforcing {
            inner: StandIn::translator(),
            constrained: Default::default(),
        };
        let summarizer = StandIn::summarizer();
        let mut options = batch_support::run_options(false);
        options.summarize = false;
        options.transliterate_names = transliterate;
        // A glossary says how to write a foreign name: it is not transliterated.
        options.glossary =
            mtsum::text::glossary::Glossary::parse("g.tsv", "=Ю. Шток\tJ. Stock\n").unwrap();
        let pipeline =
            mtsum::pipeline::Pipeline::new(Some(&translator), Some(&summarizer), options).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dir = mtsum::io::OutputDir::create(out.path()).unwrap();
        let items = batch_support::read_items(&[input.path().to_path_buf()]);
        let options = mtsum::pipeline::batch::BatchOptions::default();
        mtsum::pipeline::batch::run(&pipeline, items, &dir, &options, &Silent).unwrap();
        let seen = translator.constrained.lock().unwrap().clone();
        (sentences(out.path(), "names"), seen)
    };
    let (reported, seen) = run(false);
    // Without the option only the glossary's foreign name is constrained.
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].1, ["J. Stock"]);
    assert!(!mtsum::text::glossary::holds(
        &reported[1].en,
        "I. P. Kartashov"
    ));

    let (transliterated, seen) = run(true);
    // The stand-in writes "Irina Volk" itself, and "I. P. Kartashovym": only the second is
    // constrained, to the nominative's transliteration; Ю. Шток is left to the glossary.
    let constrained: Vec<&Vec<String>> = seen.iter().map(|(_, c)| c).collect();
    assert_eq!(
        constrained,
        [
            &vec!["I. P. Kartashov".to_string()],
            &vec!["J. Stock".to_string()]
        ]
    );
    assert_eq!(transliterated[0].en, reported[0].en);
    assert!(mtsum::text::glossary::holds(
        &transliterated[1].en,
        "I. P. Kartashov"
    ));
    assert!(transliterated[2].terms.iter().all(|t| t.met));
}

#[test]
fn summarize_enforces_the_glossary_in_english_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let glossary = dir.path().join("glossary.tsv");
    std::fs::write(&glossary, TERMS_TSV).unwrap();
    let document = "Сотрудники полиции задержали подозреваемого. Расследование продолжается.\n";
    let summarize = |glossary: Option<&std::path::Path>| {
        let args = ["summarize", "--lines", "--lang", "en", "--extractive"];
        stdout_of_tiny(&args, glossary, document)
    };
    let (without, with) = (summarize(None), summarize(Some(&glossary)));
    assert!(
        !mtsum::text::glossary::holds(&without, "criminal police"),
        "{without}"
    );
    assert!(
        mtsum::text::glossary::holds(&with, "criminal police"),
        "{with}"
    );
}
