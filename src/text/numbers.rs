//! Numbers in a Russian sentence and whether its English translation kept them.
//!
//! A sum, a date or an article of a code that changes on the way is the error a reader of a
//! translated release must never miss, and translation models do drop and change numbers. Every
//! number written in digits in the source is looked for in the translation in one of the forms
//! an English text writes it in:
//!
//! | source | accepted in the translation |
//! |---|---|
//! | `1 234` (space, no-break or thin space between thousands) | `1,234`, `1234` |
//! | `12,5` | `12.5` |
//! | `17,3%` | `17.3%`, `17.3 %`, `17.3 percent`, `17.3 per cent` |
//! | `15.03.2024` | `15.03.2024`, `March 15, 2024`, `15 March 2024`, `2024-03-15` |
//! | `10:30` | `10:30`, `10.30` |
//! | `15 тыс.`, `2,5 млн` | `15`, `15,000`, `15000`; `2.5`, `2,500,000`, `2500000` |
//! | `2024`, `ст. 159`, `8.1` | the same digits |
//!
//! A number is found in the translation only as a whole: `17` is not found in `170`, `2017`
//! or `17.5`. Numbers written as words are not required.

use std::ops::Range;

/// What kind of number was found, for the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberKind {
    /// A whole number, its digits without separators (`1234`).
    Integer(String),
    /// A decimal fraction, with a full stop (`12.5`); also a dotted section number (`8.1`).
    Decimal(String),
    /// A percentage of the integer or decimal value (`17.3`).
    Percent(String),
    /// A date: day, month, year.
    Date { day: u32, month: u32, year: String },
    /// A time of day, hours and minutes.
    Time { hours: String, minutes: String },
}

/// A number in a source sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceNumber {
    /// As written in the source (`17,3%`, `1 234`, `15.03.2024`).
    pub text: String,
    /// Byte range in the sentence.
    pub span: Range<usize>,
    pub kind: NumberKind,
    /// The forms the translation may write it in, the usual one first.
    pub accepted: Vec<String>,
}

impl SourceNumber {
    /// The warning for a translation that lacks this number: it says it is a number, quotes
    /// it as written in the source and gives the form it was expected in.
    pub fn missing_warning(&self) -> String {
        format!(
            "number \"{}\" was missing from the translation (expected \"{}\")",
            self.text, self.accepted[0]
        )
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Multipliers written after a number in Russian, and their powers of ten.
const MULTIPLIERS: &[(&str, u32)] = &[("тыс", 3), ("млн", 6), ("млрд", 9), ("трлн", 12)];

fn is_group_separator(c: char) -> bool {
    matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '\u{2009}')
}

/// Every number written in digits in `sentence`, in order.
pub fn source_numbers(sentence: &str) -> Vec<SourceNumber> {
    let chars: Vec<(usize, char)> = sentence.char_indices().collect();
    let at = |k: usize| chars.get(k).map(|(_, c)| *c);
    let digit_at = |k: usize| at(k).is_some_and(|c| c.is_ascii_digit());
    let digits_from = |k: usize| (k..).take_while(|&j| digit_at(j)).count();
    let byte = |k: usize| chars.get(k).map_or(sentence.len(), |(i, _)| *i);
    let mut found = Vec::new();
    let mut k = 0;
    while k < chars.len() {
        if !digit_at(k)
            || (k > 0 && (digit_at(k - 1) || at(k - 1).is_some_and(char::is_alphabetic)))
        {
            k += 1;
            continue;
        }
        let start = k;
        let first = digits_from(k);
        let mut end = k + first;
        // dd.mm.yyyy
        if (1..=2).contains(&first)
            && at(end) == Some('.')
            && digits_from(end + 1) == 2
            && at(end + 3) == Some('.')
            && digits_from(end + 4) == 4
        {
            let day: u32 = digits(sentence, byte(start), byte(end))
                .parse()
                .unwrap_or(0);
            let month: u32 = digits(sentence, byte(end + 1), byte(end + 3))
                .parse()
                .unwrap_or(0);
            let year = digits(sentence, byte(end + 4), byte(end + 8));
            if (1..=31).contains(&day) && (1..=12).contains(&month) {
                let kind = NumberKind::Date { day, month, year };
                found.push(number(sentence, byte(start), byte(end + 8), kind));
                k = end + 8;
                continue;
            }
        }
        // hh:mm
        if (1..=2).contains(&first) && at(end) == Some(':') && digits_from(end + 1) == 2 {
            let hours = digits(sentence, byte(start), byte(end));
            let minutes = digits(sentence, byte(end + 1), byte(end + 3));
            let kind = NumberKind::Time { hours, minutes };
            found.push(number(sentence, byte(start), byte(end + 3), kind));
            k = end + 3;
            continue;
        }
        let mut value = digits(sentence, byte(start), byte(end));
        // Thousands: `1 234 567`, only after a first group of one to three digits.
        if first <= 3 {
            while at(end).is_some_and(is_group_separator) && digits_from(end + 1) == 3 {
                value.push_str(&digits(sentence, byte(end + 1), byte(end + 4)));
                end += 4;
            }
        }
        let mut kind = NumberKind::Integer(value.clone());
        // `12,5` (a decimal comma) or `8.1`, `159.1`, `3.5` (a full stop between digits).
        if matches!(at(end), Some(',') | Some('.')) && digit_at(end + 1) {
            let mut decimal = value.clone();
            while matches!(at(end), Some(',') | Some('.')) && digit_at(end + 1) {
                let fraction = digits_from(end + 1);
                decimal.push('.');
                decimal.push_str(&digits(sentence, byte(end + 1), byte(end + 1 + fraction)));
                end += 1 + fraction;
            }
            kind = NumberKind::Decimal(decimal);
        }
        // `17,3%`, `17,3 %`
        let space = usize::from(at(end).is_some_and(is_group_separator));
        if at(end + space) == Some('%') {
            let value = match &kind {
                NumberKind::Integer(v) | NumberKind::Decimal(v) => v.clone(),
                _ => unreachable!("only integers and decimals reach here"),
            };
            kind = NumberKind::Percent(value);
            end += space + 1;
        }
        let mut n = number(sentence, byte(start), byte(end), kind);
        if let Some(power) = multiplier_after(&sentence[byte(end)..]) {
            let scaled = match &n.kind {
                NumberKind::Integer(v) | NumberKind::Decimal(v) => scale(v, power),
                _ => None,
            };
            if let Some(scaled) = scaled {
                n.accepted.push(group_thousands(&scaled));
                n.accepted.push(scaled);
            }
        }
        found.push(n);
        k = end;
    }
    found
}

fn digits(sentence: &str, from: usize, to: usize) -> String {
    sentence[from..to].to_string()
}

fn number(sentence: &str, start: usize, end: usize, kind: NumberKind) -> SourceNumber {
    let mut accepted = accepted_forms(&kind);
    let text = &sentence[start..end];
    if matches!(kind, NumberKind::Integer(_)) && !text.contains(is_group_separator) {
        accepted.reverse(); // `2024` as written first, `2,024` also accepted
    }
    SourceNumber {
        text: sentence[start..end].to_string(),
        span: start..end,
        kind,
        accepted,
    }
}

fn accepted_forms(kind: &NumberKind) -> Vec<String> {
    match kind {
        NumberKind::Integer(v) if v.len() > 3 && !v.starts_with('0') => {
            vec![group_thousands(v), v.clone()]
        }
        // `1 234,5`: also with a comma between thousands, unless it is a section (`8.1.2`).
        NumberKind::Decimal(v)
            if v.matches('.').count() == 1 && v.find('.').is_some_and(|dot| dot > 3) =>
        {
            vec![v.clone(), group_thousands(v)]
        }
        NumberKind::Integer(v) | NumberKind::Decimal(v) => vec![v.clone()],
        NumberKind::Percent(v) => ["%", " %", " percent", " per cent"]
            .iter()
            .map(|suffix| format!("{v}{suffix}"))
            .collect(),
        NumberKind::Date { day, month, year } => {
            let name = MONTHS[*month as usize - 1];
            vec![
                format!("{day:02}.{month:02}.{year}"),
                format!("{name} {day}, {year}"),
                format!("{day} {name} {year}"),
                format!("{year}-{month:02}-{day:02}"),
            ]
        }
        NumberKind::Time { hours, minutes } => {
            vec![format!("{hours}:{minutes}"), format!("{hours}.{minutes}")]
        }
    }
}

/// `1234567` -> `1,234,567`.
fn group_thousands(digits: &str) -> String {
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let mut out = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

/// The power of ten of a multiplier word right after a number (`15 тыс.`, `2,5 млрд`).
fn multiplier_after(rest: &str) -> Option<u32> {
    let word: String = rest
        .trim_start_matches(is_group_separator)
        .chars()
        .take_while(|c| c.is_alphabetic())
        .collect::<String>()
        .to_lowercase();
    MULTIPLIERS
        .iter()
        .find(|(prefix, _)| word.starts_with(prefix))
        .map(|(_, power)| *power)
}

/// `2.5` times ten to the `power`, as digits (`2500000`); None when it is not whole.
fn scale(value: &str, power: u32) -> Option<String> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > power as usize || value.matches('.').count() > 1 {
        return None;
    }
    let zeros = "0".repeat(power as usize - fraction.len());
    let digits = format!("{whole}{fraction}{zeros}");
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    })
}

/// Whether `translation` holds `form` as a whole: not inside a longer number (`17` in `170`,
/// `2017`, `17.5` or `1,175`), and a form that starts with a letter not inside a word.
pub fn contains_form(translation: &str, form: &str) -> bool {
    let mut from = 0;
    while let Some(offset) = translation[from..].find(form) {
        let start = from + offset;
        let end = start + form.len();
        let before: Vec<char> = translation[..start].chars().rev().take(2).collect();
        let after: Vec<char> = translation[end..].chars().take(2).collect();
        let digit = |c: Option<&char>| c.is_some_and(|c| c.is_ascii_digit());
        let joined_before = digit(before.first())
            || (matches!(before.first(), Some('.') | Some(',')) && digit(before.get(1)))
            || (form.starts_with(char::is_alphabetic)
                && before.first().is_some_and(|c| c.is_alphanumeric()));
        let joined_after = digit(after.first())
            || (matches!(after.first(), Some('.') | Some(',')) && digit(after.get(1)));
        if !joined_before && !joined_after {
            return true;
        }
        from = start + form.chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// Whether the translation holds `number` in one of its accepted forms.
pub fn is_kept(number: &SourceNumber, translation: &str) -> bool {
    number
        .accepted
        .iter()
        .any(|form| contains_form(translation, form))
}

/// The numbers of `source` that `translation` lacks, each once, in source order.
pub fn missing_numbers(source: &str, translation: &str) -> Vec<SourceNumber> {
    let mut missing: Vec<SourceNumber> = Vec::new();
    for number in source_numbers(source) {
        if !is_kept(&number, translation) && !missing.iter().any(|m| m.text == number.text) {
            missing.push(number);
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (as written, accepted forms) of every number in `sentence`.
    fn found(sentence: &str) -> Vec<(String, Vec<String>)> {
        source_numbers(sentence)
            .into_iter()
            .map(|n| (n.text, n.accepted))
            .collect()
    }

    fn texts(sentence: &str) -> Vec<String> {
        source_numbers(sentence)
            .into_iter()
            .map(|n| n.text)
            .collect()
    }

    fn missing(source: &str, translation: &str) -> Vec<String> {
        missing_numbers(source, translation)
            .iter()
            .map(SourceNumber::missing_warning)
            .collect()
    }

    fn kept(source: &str, translation: &str) {
        assert_eq!(
            missing(source, translation),
            Vec::<String>::new(),
            "{source} -> {translation}"
        );
    }

    #[test]
    fn integers_with_thousands_separators() {
        assert_eq!(
            found("Изъято 1 234 доз."),
            vec![(
                "1 234".to_string(),
                vec!["1,234".to_string(), "1234".to_string()]
            )]
        );
        assert_eq!(
            texts("Ущерб — 1\u{a0}234\u{a0}567 руб."),
            vec!["1\u{a0}234\u{a0}567"]
        );
        assert_eq!(texts("Штраф 5\u{202f}000 руб."), vec!["5\u{202f}000"]);
        // A four-digit year is not the first group of a larger number.
        assert_eq!(texts("В 2023 году 150 человек"), vec!["2023", "150"]);
        kept("Изъято 1 234 доз.", "1,234 doses were seized.");
        kept("Изъято 1 234 доз.", "1234 doses were seized.");
        assert_eq!(
            missing("Изъято 1 234 доз.", "1 234 doses were seized."),
            vec!["number \"1 234\" was missing from the translation (expected \"1,234\")"]
        );
        kept("Ущерб — 1 234 567 руб.", "Damage: 1,234,567 rubles.");
    }

    #[test]
    fn decimals_with_a_comma() {
        assert_eq!(
            found("Рост на 12,5 пункта."),
            vec![("12,5".to_string(), vec!["12.5".to_string()])]
        );
        kept("Рост на 12,5 пункта.", "Growth of 12.5 points.");
        assert_eq!(
            missing("Рост на 12,5 пункта.", "Growth of 12,5 points."),
            vec!["number \"12,5\" was missing from the translation (expected \"12.5\")"]
        );
        assert_eq!(
            missing("Рост на 12,5 пункта.", "Growth of 12.55 points."),
            vec!["number \"12,5\" was missing from the translation (expected \"12.5\")"]
        );
        // A list with commas is not a decimal.
        assert_eq!(texts("пункты 1, 2 и 3"), vec!["1", "2", "3"]);
    }

    #[test]
    fn percentages() {
        let forms = ["17.3%", "17.3 %", "17.3 percent", "17.3 per cent"];
        assert_eq!(
            found("Рост составил 17,3%."),
            vec![(
                "17,3%".to_string(),
                forms.iter().map(|s| s.to_string()).collect()
            )]
        );
        assert_eq!(texts("Рост составил 17,3 %."), vec!["17,3 %"]);
        kept("Рост составил 17,3%.", "Growth was 17.3%.");
        kept("Рост составил 17,3%.", "Growth was 17.3 percent.");
        kept("Рост составил 17,3%.", "Growth was 17.3 per cent.");
        assert_eq!(
            missing("Рост составил 17,3%.", "Growth was 17.3 points."),
            vec!["number \"17,3%\" was missing from the translation (expected \"17.3%\")"]
        );
        kept("Раскрываемость — 85%.", "The clearance rate is 85%.");
        kept("Снижение на 12 проц.", "A decrease of 12 percent.");
    }

    #[test]
    fn dates() {
        let date = "Закон вступил в силу 15.03.2024.";
        assert_eq!(texts(date), vec!["15.03.2024"]);
        kept(date, "The law entered into force on 15.03.2024.");
        kept(date, "The law entered into force on March 15, 2024.");
        kept(date, "The law entered into force on 15 March 2024.");
        kept(date, "The law entered into force on 2024-03-15.");
        assert_eq!(
            missing(date, "The law entered into force on March 16, 2024."),
            vec![
                "number \"15.03.2024\" was missing from the translation (expected \"15.03.2024\")"
            ]
        );
        kept("Срок — до 05.03.2024.", "Deadline: March 5, 2024.");
        kept("Срок — до 5.03.2024.", "Deadline: 05.03.2024.");
        // Not a date: a section number, kept as written.
        assert_eq!(texts("согласно п. 8.1.2 Правил"), vec!["8.1.2"]);
        kept(
            "Согласно ст. 159.1 УК РФ",
            "Under Article 159.1 of the Criminal Code",
        );
    }

    #[test]
    fn years_articles_and_plain_numbers() {
        assert_eq!(
            texts("по ч. 4 ст. 159 УК РФ в 2023 г."),
            vec!["4", "159", "2023"]
        );
        kept(
            "по ч. 4 ст. 159 УК РФ в 2023 г.",
            "under Part 4 of Article 159 of the Criminal Code in 2023",
        );
        assert_eq!(
            missing(
                "по ч. 4 ст. 159 УК РФ",
                "under Part 4 of Article 158 of the Criminal Code"
            ),
            vec!["number \"159\" was missing from the translation (expected \"159\")"]
        );
        kept("В 1990-х гг.", "In the 1990s");
        kept("Он финишировал 5-м.", "He finished 5th.");
        kept("В 2020–2022 гг.", "In 2020-2022");
        kept("Самолёт Ту-154 приземлился.", "The Tu-154 landed.");
        kept("Телефон: 8 (495) 694-92-29.", "Phone: 8 (495) 694-92-29.");
    }

    #[test]
    fn a_number_is_found_only_as_a_whole() {
        assert!(!contains_form(
            "In 2017 there were 170 cases and 1,175 fines.",
            "17"
        ));
        assert!(!contains_form("A rate of 17.5 was recorded.", "17"));
        assert!(contains_form("17 people, (17) and 17.", "17"));
        assert!(contains_form("On 17.", "17"));
        assert!(!contains_form("on 25 March 2024", "5 March 2024"));
        assert!(contains_form("since May 15, 2024.", "May 15, 2024"));
        kept("Изъято 1 234,5 кг.", "1,234.5 kg were seized.");
        kept("Изъято 1 234,5 кг.", "1234.5 kg were seized.");
        assert_eq!(
            missing("Задержаны 17 человек.", "170 people were detained."),
            vec!["number \"17\" was missing from the translation (expected \"17\")"]
        );
    }

    #[test]
    fn multipliers() {
        kept(
            "Участвовали 15 тыс. человек.",
            "15 thousand people took part.",
        );
        kept("Участвовали 15 тыс. человек.", "15,000 people took part.");
        kept("Участвовали 15 тыс. человек.", "15000 people took part.");
        kept(
            "Бюджет — 2,5 млрд руб.",
            "The budget is 2.5 billion rubles.",
        );
        kept(
            "Бюджет — 2,5 млрд руб.",
            "The budget is 2,500,000,000 rubles.",
        );
        assert_eq!(
            missing("Бюджет — 2,5 млрд руб.", "The budget is 25 billion rubles."),
            vec!["number \"2,5\" was missing from the translation (expected \"2.5\")"]
        );
    }

    #[test]
    fn times_and_words() {
        assert_eq!(texts("Начало в 10:30."), vec!["10:30"]);
        kept("Начало в 10:30.", "Start at 10:30.");
        kept("Начало в 10:30.", "Start at 10.30.");
        // Numbers written as words are not required.
        assert!(source_numbers("Задержаны пятеро.").is_empty());
        kept("Задержаны пятеро.", "Five were detained.");
    }

    #[test]
    fn each_missing_number_is_reported_once_in_source_order() {
        assert_eq!(
            missing(
                "В 2023 и 2024 гг. задержаны 5 и 5 человек.",
                "People were detained."
            ),
            vec![
                "number \"2023\" was missing from the translation (expected \"2023\")",
                "number \"2024\" was missing from the translation (expected \"2024\")",
                "number \"5\" was missing from the translation (expected \"5\")",
            ]
        );
    }

    #[test]
    fn numbers_inside_words_are_left_out_but_after_a_hyphen_are_kept() {
        assert_eq!(texts("Модель A320 и COVID-19"), vec!["19"]);
    }
}
