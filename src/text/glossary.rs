//! Glossaries: Russian terms with the English each must be translated as, read from a file,
//! and found in Russian text in any inflected form.
//!
//! A ministry called three different things in one translated release is what a partner
//! reader notices. A glossary says how each term is translated; this module reads it and finds
//! its terms in a sentence however Russian grammar has changed them: "Министерства внутренних
//! дел", "в Министерстве внутренних дел" and "Министерству внутренних дел" are all the entry
//! "Министерство внутренних дел". Words are compared by their Snowball stem (the maintained
//! `rust-stemmers` crate, not a hand-written suffix list), lower-cased, `ё` as `е`, a
//! hyphenated word as one word. Abbreviations and words in capitals (`МВД`, `ГИБДД`) compare
//! exactly. An entry written `=Волк` matches only the exact words. A one-word term never
//! matches a word of a person's name (`Волк` in `Ирина Волк`: see [`super::names`]).
//!
//! File format: UTF-8, one entry per line, `russian<TAB>english`; `#` starts a comment line,
//! blank lines are skipped. A file whose first entry line is `ru,en` is CSV instead, with
//! `"quoted, fields"` as usual. A line that is neither is an error naming the file and line.

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use rust_stemmers::{Algorithm, Stemmer};

/// One entry of a glossary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The Russian side as written in the file (without the `=` mark).
    pub ru: String,
    /// The English the term must be translated as.
    pub en: String,
    /// `=` before the Russian side: only the exact words match, not their inflections.
    pub exact: bool,
    /// Where the entry was read: `file:line`.
    pub origin: String,
    /// The words to compare, one per word of `ru`.
    keys: Vec<WordKey>,
}

/// How one word of a term is compared with a word of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WordKey {
    /// An abbreviation or a word in capitals: equal as written.
    Exact(String),
    /// Any inflection: equal Snowball stems of the folded word.
    Stem(String),
    /// An `=` entry's word: equal folded words.
    Folded(String),
}

/// A bad glossary line: the file, the line and what is wrong, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlossaryError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for GlossaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for GlossaryError {}

/// The entries of one or more glossary files, in the order read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Glossary {
    entries: Vec<Entry>,
}

/// A term found in a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermMatch {
    /// Byte range in the sentence.
    pub span: Range<usize>,
    /// The words as found in the text (`Министерству внутренних дел`).
    pub found: String,
    /// Index of the entry in [`Glossary::entries`].
    pub entry: usize,
}

impl Glossary {
    /// Reads the text of a glossary file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Glossary, GlossaryError> {
        let mut glossary = Glossary::default();
        glossary.add(file, text)?;
        Ok(glossary)
    }

    /// Adds the entries of another file. A Russian term given twice with different English,
    /// in one file or across files, is an error that names both lines.
    pub fn add(&mut self, file: &str, text: &str) -> Result<(), GlossaryError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let error = |line: usize, message: String| GlossaryError {
            file: file.to_string(),
            line,
            message,
        };
        let mut csv = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let is_csv =
                *csv.get_or_insert_with(|| trimmed.replace(' ', "").eq_ignore_ascii_case("ru,en"));
            if is_csv && trimmed.replace(' ', "").eq_ignore_ascii_case("ru,en") {
                continue; // the header
            }
            let fields = if is_csv {
                csv_fields(trimmed).map_err(|m| error(line, m))?
            } else {
                raw.split('\t').map(|f| f.trim().to_string()).collect()
            };
            let [ru, en] = fields.as_slice() else {
                let expected = if is_csv {
                    "two comma-separated fields, `russian,english` (quote a field that holds a comma)"
                } else {
                    "`russian<TAB>english` (one tab between the two sides), or a CSV file with the header `ru,en`"
                };
                return Err(error(
                    line,
                    format!(
                        "expected {expected}; found {} field(s) in {raw:?}",
                        fields.len()
                    ),
                ));
            };
            let (exact, ru) = match ru.strip_prefix('=') {
                Some(rest) => (true, rest.trim()),
                None => (false, ru.as_str()),
            };
            if ru.is_empty() || en.is_empty() {
                return Err(error(
                    line,
                    format!("both sides must be filled in: {raw:?}"),
                ));
            }
            let keys = term_keys(ru, exact);
            if keys.is_empty() {
                return Err(error(
                    line,
                    format!("the Russian side has no word: {raw:?}"),
                ));
            }
            let origin = format!("{file}:{line}");
            if let Some(other) = self
                .entries
                .iter()
                .find(|e| e.keys == keys && e.exact == exact && e.en != *en)
            {
                return Err(error(
                    line,
                    format!(
                        "\"{ru}\" is already translated as \"{}\" at {}; keep one entry",
                        other.en, other.origin
                    ),
                ));
            }
            self.entries.push(Entry {
                ru: ru.to_string(),
                en: en.to_string(),
                exact,
                origin,
                keys,
            });
        }
        Ok(())
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entries as one text (`=` marks, tabs, one a line): what the outputs depend on,
    /// whatever files, comments and order of CSV or TSV they came from.
    pub fn canonical(&self) -> String {
        self.entries
            .iter()
            .map(|e| format!("{}{}\t{}\n", if e.exact { "=" } else { "" }, e.ru, e.en))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The terms of `sentence`, in order, without overlaps: where several entries match at
    /// one place the longest wins (`Министерство внутренних дел` over `Министерство`).
    pub fn find(&self, sentence: &str) -> Vec<TermMatch> {
        let words = words(sentence);
        let in_names: Vec<Range<usize>> = super::names::find_names(sentence)
            .into_iter()
            .map(|n| n.span)
            .collect();
        let stems: Vec<String> = words.iter().map(|w| stem(&fold(w.text))).collect();
        let mut found = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let best = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    let n = e.keys.len();
                    i + n <= words.len()
                        && e.keys
                            .iter()
                            .zip(&words[i..i + n])
                            .zip(&stems[i..i + n])
                            .all(|((key, word), stem)| key.matches(word.text, stem))
                        && (n > 1 || !in_names.iter().any(|r| r.contains(&words[i].start)))
                })
                .max_by_key(|(index, e)| (e.keys.len(), std::cmp::Reverse(*index)));
            match best {
                Some((entry, e)) => {
                    let n = e.keys.len();
                    let span = words[i].start..words[i + n - 1].end;
                    found.push(TermMatch {
                        found: sentence[span.clone()].to_string(),
                        span,
                        entry,
                    });
                    i += n;
                }
                None => i += 1,
            }
        }
        found
    }
}

/// Whether `translation` holds `english` as whole words, letter case aside (`Ministry of
/// Internal Affairs` in `the ministry of internal affairs said`, not `Interpol` in
/// `Interpolation`).
pub fn holds(translation: &str, english: &str) -> bool {
    let (haystack, needle) = (translation.to_lowercase(), english.trim().to_lowercase());
    if needle.is_empty() {
        return false;
    }
    haystack.match_indices(&needle).any(|(start, _)| {
        let before = haystack[..start].chars().next_back();
        let after = haystack[start + needle.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

impl WordKey {
    fn matches(&self, word: &str, word_stem: &str) -> bool {
        match self {
            WordKey::Exact(exact) => fold_yo(word) == *exact,
            // A heading in capitals (`МИНИСТЕРСТВО ВНУТРЕННИХ ДЕЛ`) still matches by stem.
            WordKey::Stem(stem) => word_stem == stem,
            WordKey::Folded(folded) => fold(word) == *folded,
        }
    }
}

fn term_keys(ru: &str, exact: bool) -> Vec<WordKey> {
    words(ru)
        .iter()
        .map(|w| {
            if is_abbreviation(w.text) {
                WordKey::Exact(fold_yo(w.text))
            } else if exact {
                WordKey::Folded(fold(w.text))
            } else {
                WordKey::Stem(stem(&fold(w.text)))
            }
        })
        .collect()
}

/// An abbreviation or a word in capitals: two or more letters, no small letter (`МВД`,
/// `ГИБДД`, `ФСБ`); compared exactly, since a stemmer would cut them like words.
fn is_abbreviation(word: &str) -> bool {
    let letters = word.chars().filter(|c| c.is_alphabetic()).count();
    letters >= 2 && !word.chars().any(char::is_lowercase)
}

fn fold_yo(word: &str) -> String {
    word.replace('ё', "е").replace('Ё', "Е")
}

/// Lower case, `ё` as `е`.
fn fold(word: &str) -> String {
    fold_yo(&word.to_lowercase())
}

fn stem(folded: &str) -> String {
    static STEMMER: OnceLock<Stemmer> = OnceLock::new();
    STEMMER
        .get_or_init(|| Stemmer::create(Algorithm::Russian))
        .stem(folded)
        .into_owned()
}

/// A word of the text: letters and digits, with inner hyphens (`генерал-лейтенант`).
struct Word<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

fn words(text: &str) -> Vec<Word<'_>> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut found = Vec::new();
    let mut start: Option<usize> = None;
    for (k, &(i, c)) in chars.iter().enumerate() {
        let inner_hyphen = matches!(c, '-' | '‐')
            && start.is_some()
            && chars.get(k + 1).is_some_and(|(_, d)| d.is_alphanumeric());
        if c.is_alphanumeric() || inner_hyphen {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            found.push(Word {
                text: &text[s..i],
                start: s,
                end: i,
            });
        }
    }
    if let Some(s) = start {
        found.push(Word {
            text: &text[s..],
            start: s,
            end: text.len(),
        });
    }
    found
}

/// The fields of one CSV line, `"` quoting (with `""` for a quote inside), trimmed.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (',', false) => fields.push(std::mem::take(&mut field).trim().to_string()),
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(format!("a quoted field is not closed: {line:?}"));
    }
    fields.push(field.trim().to_string());
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOSSARY: &str = "\
# Police and ministry terms
Министерство внутренних дел\tMinistry of Internal Affairs
МВД России\tRussian Ministry of Internal Affairs
МВД\tMVD
Интерпол\tInterpol
уголовное дело\tcriminal case
Следственный комитет\tInvestigative Committee
генерал-лейтенант полиции\tPolice Lieutenant General
Главное управление по вопросам миграции\tMain Directorate for Migration Affairs
ГИБДД\tState Traffic Safety Inspectorate
=Волк\tVolk
Национальное центральное бюро Интерпола\tInterpol National Central Bureau
";

    fn glossary() -> Glossary {
        Glossary::parse("terms.tsv", GLOSSARY).unwrap()
    }

    /// (found, english) of each term in `sentence`.
    fn terms(sentence: &str) -> Vec<(String, String)> {
        let g = glossary();
        g.find(sentence)
            .into_iter()
            .map(|m| (m.found, g.entries()[m.entry].en.clone()))
            .collect()
    }

    fn matches_as(sentence: &str, found: &str, en: &str) {
        assert_eq!(
            terms(sentence),
            vec![(found.to_string(), en.to_string())],
            "{sentence}"
        );
    }

    #[test]
    fn inflected_forms_of_multiword_terms_match() {
        let ministry = "Ministry of Internal Affairs";
        for (sentence, found) in [
            (
                "Министерство внутренних дел сообщает.",
                "Министерство внутренних дел",
            ),
            (
                "Пресс-служба Министерства внутренних дел.",
                "Министерства внутренних дел",
            ),
            (
                "Письмо направлено Министерству внутренних дел.",
                "Министерству внутренних дел",
            ),
            (
                "Совещание прошло в Министерстве внутренних дел.",
                "Министерстве внутренних дел",
            ),
            (
                "Он руководит Министерством внутренних дел.",
                "Министерством внутренних дел",
            ),
            ("министерство внутренних дел", "министерство внутренних дел"),
            ("МИНИСТЕРСТВО ВНУТРЕННИХ ДЕЛ", "МИНИСТЕРСТВО ВНУТРЕННИХ ДЕЛ"),
        ] {
            matches_as(sentence, found, ministry);
        }
        let case = "criminal case";
        for (sentence, found) in [
            ("Возбуждено уголовное дело.", "уголовное дело"),
            ("Возбуждены два уголовных дела.", "уголовных дела"),
            (
                "В рамках двух уголовных дел задержаны трое.",
                "уголовных дел",
            ),
            ("Материалы приобщены к уголовному делу.", "уголовному делу"),
            (
                "Следователи работают над уголовным делом.",
                "уголовным делом",
            ),
            ("Сведения содержатся в уголовном деле.", "уголовном деле"),
            (
                "По уголовным делам проведены экспертизы.",
                "уголовным делам",
            ),
            ("Изучены материалы уголовных дел.", "уголовных дел"),
            ("Объединены уголовные дела.", "уголовные дела"),
            ("Возбуждено Уголовное дело.", "Уголовное дело"),
        ] {
            matches_as(sentence, found, case);
        }
        let committee = "Investigative Committee";
        for (sentence, found) in [
            (
                "Следственный комитет возбудил дело.",
                "Следственный комитет",
            ),
            (
                "Сотрудники Следственного комитета выехали.",
                "Следственного комитета",
            ),
            (
                "Материалы переданы Следственному комитету.",
                "Следственному комитету",
            ),
            (
                "Он работает в Следственном комитете.",
                "Следственном комитете",
            ),
            (
                "Встреча со Следственным комитетом.",
                "Следственным комитетом",
            ),
        ] {
            matches_as(sentence, found, committee);
        }
        let migration = "Main Directorate for Migration Affairs";
        for (sentence, found) in [
            (
                "Главное управление по вопросам миграции сообщило.",
                "Главное управление по вопросам миграции",
            ),
            (
                "Сотрудники Главного управления по вопросам миграции.",
                "Главного управления по вопросам миграции",
            ),
            (
                "В Главном управлении по вопросам миграции пояснили.",
                "Главном управлении по вопросам миграции",
            ),
        ] {
            matches_as(sentence, found, migration);
        }
        for (sentence, found) in [
            (
                "Звание присвоено генерал-лейтенанту полиции.",
                "генерал-лейтенанту полиции",
            ),
            (
                "Приказ подписал генерал-лейтенант полиции.",
                "генерал-лейтенант полиции",
            ),
            (
                "Встреча с генерал-лейтенантом полиции.",
                "генерал-лейтенантом полиции",
            ),
        ] {
            matches_as(sentence, found, "Police Lieutenant General");
        }
        let bureau = "Interpol National Central Bureau";
        for (sentence, found) in [
            (
                "Национальное центральное бюро Интерпола сообщило.",
                "Национальное центральное бюро Интерпола",
            ),
            (
                "Запрос Национального центрального бюро Интерпола.",
                "Национального центрального бюро Интерпола",
            ),
        ] {
            matches_as(sentence, found, bureau);
        }
    }

    #[test]
    fn one_word_terms_and_abbreviations_match() {
        for (sentence, found) in [
            ("Интерпол объявил розыск.", "Интерпол"),
            ("Запрос Интерпола исполнен.", "Интерпола"),
            ("Сотрудничество с Интерполом расширяется.", "Интерполом"),
            ("Данные переданы Интерполу.", "Интерполу"),
            ("Об этом говорится в Интерполе.", "Интерполе"),
            (
                "Генеральный секретарь Интерпола Ю. Шток выступил.",
                "Интерпола",
            ),
        ] {
            matches_as(sentence, found, "Interpol");
        }
        for (sentence, found) in [
            ("Сотрудники МВД задержали подозреваемого.", "МВД"),
            ("По данным МВД, число краж снизилось.", "МВД"),
            ("Сотрудники ГИБДД провели рейд.", "ГИБДД"),
            ("Инспекторы ГИБДД остановили автомобиль.", "ГИБДД"),
        ] {
            let en = if found == "МВД" {
                "MVD"
            } else {
                "State Traffic Safety Inspectorate"
            };
            matches_as(sentence, found, en);
        }
        // The abbreviation stays exact while the word after it declines.
        for (sentence, found) in [
            ("МВД России сообщает.", "МВД России"),
            ("Сотрудники МВД России задержали трёх.", "МВД России"),
            ("Письмо направлено в МВД России.", "МВД России"),
        ] {
            matches_as(sentence, found, "Russian Ministry of Internal Affairs");
        }
        matches_as("Волк напал на овец.", "Волк", "Volk");
    }

    #[test]
    fn near_misses_do_not_match() {
        for sentence in [
            "Министерство юстиции сообщает.",
            "Министерство иностранных дел сообщает.",
            "Министерство внутренних и иностранных дел.",
            "Внутренних дел министерство.",
            "Возбуждено административное дело.",
            "Уголовный кодекс изменён.",
            "Метод интерполяции применён.",
            "Делегация министерства прибыла.",
            "Следственный изолятор переполнен.",
            "Об этом сообщила Ирина Волк.",
            "Сообщил Волк И. И., эксперт.",
            "Волка видели в лесу.",
            "Сотрудники мвд задержали подозреваемого.",
            "Сотрудники МВДР задержали подозреваемого.",
            "Генерал полиции выступил.",
        ] {
            assert_eq!(terms(sentence), Vec::new(), "{sentence}");
        }
    }

    #[test]
    fn a_foreign_name_with_initials_can_be_an_exact_entry() {
        let g = Glossary::parse("g.tsv", "=Ю. Шток\tJ. Stock\n").unwrap();
        let found = g.find("Генеральный секретарь Интерпола Ю. Шток выступил.");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].found, "Ю. Шток");
        assert!(g.find("Генеральный секретарь Ю. Штока.").is_empty());
    }

    #[test]
    fn yo_is_e_and_the_longest_term_wins() {
        let g = Glossary::parse("g.tsv", "Объём\tvolume\nобъём изъятого\tseized volume\n").unwrap();
        let found = g.find("Объем изъятого вырос, объём продаж упал.");
        let en: Vec<&str> = found
            .iter()
            .map(|m| g.entries()[m.entry].en.as_str())
            .collect();
        assert_eq!(en, ["seized volume", "volume"]);
        assert_eq!(found[0].found, "Объем изъятого");
    }

    #[test]
    fn a_translation_holds_a_term_as_whole_words_in_any_case() {
        assert!(holds(
            "The ministry of internal affairs said.",
            "Ministry of Internal Affairs"
        ));
        assert!(holds("Interpol's data", "Interpol"));
        assert!(!holds("Interpolation was used.", "Interpol"));
        assert!(!holds(
            "The Ministry of the Interior said.",
            "Ministry of Internal Affairs"
        ));
        assert!(!holds("anything", " "));
    }

    #[test]
    fn csv_with_a_header_and_quoted_fields() {
        let g = Glossary::parse(
            "g.csv",
            "# terms\nru,en\nИнтерпол,Interpol\n\"Министерство внутренних дел\",\"Ministry of Internal Affairs, Russia\"\n",
        )
        .unwrap();
        assert_eq!(g.entries().len(), 2);
        assert_eq!(g.entries()[1].en, "Ministry of Internal Affairs, Russia");
        assert_eq!(g.entries()[1].origin, "g.csv:4");
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let err = Glossary::parse("terms.tsv", "# c\n\nИнтерпол\tInterpol\nМВД MVD\n").unwrap_err();
        assert_eq!((err.file.as_str(), err.line), ("terms.tsv", 4));
        assert!(
            err.to_string()
                .starts_with("terms.tsv:4: expected `russian<TAB>english`"),
            "{err}"
        );
        let err = Glossary::parse("t.tsv", "Интерпол\t\n").unwrap_err();
        assert!(err.to_string().contains("both sides"), "{err}");
        let err = Glossary::parse("t.tsv", "a\tb\tc\n").unwrap_err();
        assert!(err.to_string().contains("found 3 field(s)"), "{err}");
        let err = Glossary::parse("t.csv", "ru,en\nИнтерпол,Interpol,extra\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = Glossary::parse("t.csv", "ru,en\n\"Интерпол,Interpol\n").unwrap_err();
        assert!(err.to_string().contains("not closed"), "{err}");
        let err =
            Glossary::parse("t.tsv", "Интерпол\tInterpol\nИнтерпола\tINTERPOL\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.to_string()
                .contains("already translated as \"Interpol\" at t.tsv:1"),
            "{err}"
        );
        let err = Glossary::parse("t.tsv", "=\tx\n").unwrap_err();
        assert!(err.to_string().contains("both sides"), "{err}");
    }

    #[test]
    fn files_add_up_and_conflicts_across_files_are_errors() {
        let mut g = Glossary::parse("a.tsv", "Интерпол\tInterpol\n").unwrap();
        g.add("b.tsv", "\u{feff}МВД\tMVD\n").unwrap();
        assert_eq!(g.entries().len(), 2);
        let err = g.add("c.tsv", "# x\nИнтерпол\tICPO\n").unwrap_err();
        assert_eq!(err.to_string(), "c.tsv:2: \"Интерпол\" is already translated as \"Interpol\" at a.tsv:1; keep one entry");
    }
}
