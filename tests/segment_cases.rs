//! The sentence segmenter against our own cases (tests/data/segmentation_cases.txt): every case
//! must pass. The pass rate, overall and per trap, is printed (`cargo test --test segment_cases
//! -- --nocapture`).

use mtsum::text;

const CASES: &str = include_str!("data/segmentation_cases.txt");
const MIN_CASES: usize = 150;

struct Case {
    group: String,
    line: usize,
    expected: Vec<String>,
}

impl Case {
    fn input(&self) -> String {
        self.expected.join(" ")
    }
}

fn cases() -> Vec<Case> {
    let mut group = String::from("(none)");
    let mut cases = Vec::new();
    for (index, line) in CASES.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("## ") {
            group = name.to_string();
        } else if !line.is_empty() && !line.starts_with('#') {
            cases.push(Case {
                group: group.clone(),
                line: index + 1,
                expected: line.split(" | ").map(str::to_string).collect(),
            });
        }
    }
    cases
}

#[test]
fn every_segmentation_case_passes() {
    let cases = cases();
    assert!(cases.len() >= MIN_CASES, "only {} cases", cases.len());
    let mut failures = Vec::new();
    let mut groups: Vec<(String, usize, usize)> = Vec::new();
    for case in &cases {
        let got = text::sentences(&case.input());
        let passed = got == case.expected;
        if !passed {
            failures.push(format!(
                "line {} [{}]\n  expected: {:?}\n  got:      {:?}",
                case.line, case.group, case.expected, got
            ));
        }
        match groups.last_mut() {
            Some((name, total, ok)) if *name == case.group => {
                *total += 1;
                *ok += usize::from(passed);
            }
            _ => groups.push((case.group.clone(), 1, usize::from(passed))),
        }
    }
    let passed = cases.len() - failures.len();
    println!(
        "segmentation cases: {passed}/{} passed ({:.1} %)",
        cases.len(),
        100.0 * passed as f64 / cases.len() as f64
    );
    for (name, total, ok) in &groups {
        println!("  {name}: {ok}/{total}");
    }
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn cases_cover_every_trap_named_in_the_issue() {
    let all: String = cases()
        .iter()
        .map(Case::input)
        .collect::<Vec<_>>()
        .join("\n");
    let traps = [
        "Ю. Шток",
        "И. П. Карташовым",
        " г. ",
        " гг. ",
        "т. е.",
        "т. д.",
        "т. п.",
        "т.н.",
        " др.",
        "ул.",
        "им.",
        "тыс.",
        "млн",
        "млрд",
        "руб.",
        "проц.",
        " п. ",
        "ст.",
        "оз.",
        "к.п.н.",
        "Дж.",
        "3.5",
        "6 июля 2007 г.",
        "№",
        "8.1.",
        "§2.",
        "IV.",
        "...",
        "…",
        "«",
        "(",
        "?!",
        ".\"",
        "— ",
    ];
    for trap in traps {
        assert!(all.contains(trap), "no case contains {trap:?}");
    }
}

/// The two errors razdel's own tests show (issue 13, item 6): a bracket that opens on a
/// lower-case word after `проц.` goes on with the sentence, and a full stop after a number's
/// ending (`1990-е.`) ends it.
#[test]
fn razdel_reported_errors_are_fixed() {
    assert_eq!(
        text::sentences("Налог решено уменьшить с 20 до 18 проц. (при сохранении льгот)."),
        vec!["Налог решено уменьшить с 20 до 18 проц. (при сохранении льгот)."]
    );
    assert_eq!(
        text::sentences("Такое я ощущал в 1990-е. Славное было время."),
        vec!["Такое я ощущал в 1990-е.", "Славное было время."]
    );
    // A bracket that opens on a capital after a full stop still starts a new sentence.
    assert_eq!(
        text::sentences("Число краж снизилось на 12 проц. (Данные МВД.) Рост продолжился."),
        vec![
            "Число краж снизилось на 12 проц.",
            "(Данные МВД.)",
            "Рост продолжился."
        ]
    );
}
