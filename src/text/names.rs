//! Person names in Russian text, their nominative form and their ICAO transliteration, and
//! how a translation rendered them.
//!
//! Translation models treat a surname as a word: "Ирина Волк" comes out as "Irina Wolf", and
//! the readers of a translated release (police and ministry partners abroad) notice names
//! first. This module finds the names a reviewer should check:
//! - initials with a surname, before or after it: `А. В. Смирнов`, `А.В. Смирнов`,
//!   `Смирнов А.В.`, `И. П. Карташовым`, `Дж. Смит`;
//! - a first name from a built-in list of common Russian first names, in any grammatical case,
//!   with an optional patronymic and the surname after it: `Ирина Волк`, `Ирину Волк`,
//!   `Владимира Александровича Колокольцева`.
//!
//! A name is given back as found, in the nominative where the first name or the initials make
//! the case ending of the surname clear (`И. П. Карташовым` -> `И. П. Карташов`,
//! `Ирины Волк` -> `Ирина Волк`: a woman's surname in a consonant does not decline), and
//! transliterated by ICAO Doc 9303, the table of Russian passports (`Кузнецов` -> `Kuznetsov`,
//! `Ю` -> `Iu`, `Щ` -> `Shch`). A surname whose case cannot be told (`А. В. Смирнова`: a
//! woman's nominative or a man's genitive) is left as written. Foreign names written in
//! Cyrillic (`Ю. Шток` is Jürgen Stock) cannot be transliterated back; a glossary can say how
//! to write them.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::OnceLock;

/// A person's name found in a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName {
    /// Byte range in the sentence.
    pub span: Range<usize>,
    /// As written in the sentence.
    pub found: String,
    /// In the nominative where it can be told (else as found), initials as `А. В.`.
    pub nominative: String,
    /// ICAO Doc 9303 transliteration of the nominative, initials first: `A. V. Smirnov`.
    pub latin: String,
    /// The surname's transliteration alone (`Smirnov`); empty for a first name with a
    /// patronymic and no surname.
    pub latin_surname: String,
    /// The first name's transliteration (`Irina`) when the name has one.
    pub latin_first_name: Option<String>,
}

/// How a translation wrote a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRendering {
    /// The words of the translation that stand for the name (`Irina Wolf`), or None when no
    /// word resembles its transliteration.
    pub text: Option<String>,
    /// Whether the surname is written as its transliteration, give or take a letter
    /// (`Kuznetsov`, `Kuznetsova`, `Kouznetsov`); false for `Wolf` for `Волк`.
    pub transliterated: bool,
}

/// ICAO Doc 9303 (Russian passports since 2013) for one Cyrillic letter, in capitals; None for
/// a character that is not a Russian letter.
fn icao(upper: char) -> Option<&'static str> {
    Some(match upper {
        'А' => "A",
        'Б' => "B",
        'В' => "V",
        'Г' => "G",
        'Д' => "D",
        'Е' | 'Ё' | 'Э' => "E",
        'Ж' => "ZH",
        'З' => "Z",
        'И' | 'Й' => "I",
        'К' => "K",
        'Л' => "L",
        'М' => "M",
        'Н' => "N",
        'О' => "O",
        'П' => "P",
        'Р' => "R",
        'С' => "S",
        'Т' => "T",
        'У' => "U",
        'Ф' => "F",
        'Х' => "KH",
        'Ц' => "TS",
        'Ч' => "CH",
        'Ш' => "SH",
        'Щ' => "SHCH",
        'Ъ' => "IE",
        'Ы' => "Y",
        'Ь' => "",
        'Ю' => "IU",
        'Я' => "IA",
        _ => return None,
    })
}

/// Transliterates Russian text by ICAO Doc 9303, keeping the capitalisation of each word: a
/// capital becomes a capital followed by small letters (`Щ` -> `Shch`), a word in capitals
/// stays in capitals (`ЩУКИН` -> `SHCHUKIN`). Other characters are kept.
pub fn transliterate(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let upper = c.to_uppercase().next().unwrap_or(c);
        let Some(latin) = icao(upper) else {
            out.push(c);
            continue;
        };
        if c.is_lowercase() {
            out.push_str(&latin.to_lowercase());
            continue;
        }
        // A capital: the word is in capitals when a neighbouring letter is a capital too.
        let is_caps = |j: usize| chars.get(j).is_some_and(|d| d.is_uppercase());
        let next_letter = chars.get(i + 1).is_some_and(|d| d.is_alphabetic());
        let all_caps = if next_letter {
            is_caps(i + 1)
        } else {
            i > 0 && is_caps(i - 1)
        };
        if all_caps {
            out.push_str(latin);
        } else {
            let mut letters = latin.chars();
            if let Some(first) = letters.next() {
                out.push(first);
                out.extend(letters.flat_map(char::to_lowercase));
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gender {
    Male,
    Female,
}

/// Grammatical cases, as bits of a set.
mod case {
    pub const NOM: u8 = 1;
    pub const GEN: u8 = 2;
    pub const DAT: u8 = 4;
    pub const ACC: u8 = 8;
    pub const INS: u8 = 16;
    pub const PRE: u8 = 32;
}

/// Common Russian first names in the nominative, with their gender. Names that also decline
/// irregularly (`Павел` -> `Павла`, `Лев` -> `Льва`, `Пётр` -> `Петра`) give their oblique stem.
const MALE_NAMES: &[&str] = &[
    "Александр",
    "Алексей",
    "Анатолий",
    "Андрей",
    "Антон",
    "Аркадий",
    "Арсений",
    "Артём",
    "Артур",
    "Богдан",
    "Борис",
    "Вадим",
    "Валентин",
    "Валерий",
    "Василий",
    "Виктор",
    "Виталий",
    "Владимир",
    "Владислав",
    "Всеволод",
    "Вячеслав",
    "Геннадий",
    "Георгий",
    "Герман",
    "Глеб",
    "Григорий",
    "Даниил",
    "Денис",
    "Дмитрий",
    "Евгений",
    "Егор",
    "Иван",
    "Игорь",
    "Илья",
    "Кирилл",
    "Константин",
    "Леонид",
    "Максим",
    "Марат",
    "Михаил",
    "Никита",
    "Николай",
    "Олег",
    "Роман",
    "Руслан",
    "Святослав",
    "Семён",
    "Сергей",
    "Станислав",
    "Степан",
    "Тимур",
    "Фёдор",
    "Эдуард",
    "Юрий",
    "Ярослав",
];

const FEMALE_NAMES: &[&str] = &[
    "Александра",
    "Алина",
    "Алла",
    "Алёна",
    "Анастасия",
    "Анна",
    "Антонина",
    "Валентина",
    "Валерия",
    "Вера",
    "Вероника",
    "Виктория",
    "Галина",
    "Дарья",
    "Диана",
    "Евгения",
    "Екатерина",
    "Елена",
    "Елизавета",
    "Жанна",
    "Зоя",
    "Инна",
    "Ирина",
    "Карина",
    "Кристина",
    "Ксения",
    "Лариса",
    "Лидия",
    "Людмила",
    "Маргарита",
    "Марина",
    "Мария",
    "Надежда",
    "Наталья",
    "Нина",
    "Оксана",
    "Ольга",
    "Полина",
    "Светлана",
    "Софья",
    "Тамара",
    "Татьяна",
    "Ульяна",
    "Эльвира",
    "Юлия",
    "Яна",
];

/// Names whose oblique cases are built on another stem than the nominative.
const IRREGULAR_STEMS: &[(&str, &str)] = &[("Павел", "Павл"), ("Лев", "Льв"), ("Пётр", "Петр")];

/// The case forms of a first name, each with the cases it can stand for.
fn declensions(nominative: &str, gender: Gender) -> Vec<(String, u8)> {
    use case::*;
    let mut forms = vec![(nominative.to_string(), NOM)];
    let strip = |n: usize| -> String {
        let chars: Vec<char> = nominative.chars().collect();
        chars[..chars.len() - n].iter().collect()
    };
    let last = nominative.chars().last().unwrap_or(' ');
    let before_last = nominative.chars().rev().nth(1).unwrap_or(' ');
    let mut add = |stem: &str, endings: &[(&str, u8)]| {
        for (ending, cases) in endings {
            forms.push((format!("{stem}{ending}"), *cases));
        }
    };
    match last {
        'а' => {
            let stem = strip(1);
            // After г, к, х and the hushing consonants the genitive is -и, not -ы.
            let gen = if "гкхжшчщ".contains(before_last) {
                "и"
            } else {
                "ы"
            };
            add(
                &stem,
                &[
                    (gen, GEN),
                    ("е", DAT | PRE),
                    ("у", ACC),
                    ("ой", INS),
                    ("ою", INS),
                ],
            );
        }
        'я' if before_last == 'и' => {
            let stem = strip(1);
            add(&stem, &[("и", GEN | DAT | PRE), ("ю", ACC), ("ей", INS)]);
        }
        'я' => {
            let stem = strip(1);
            add(
                &stem,
                &[
                    ("и", GEN),
                    ("е", DAT | PRE),
                    ("ю", ACC),
                    ("ей", INS),
                    ("ёй", INS),
                ],
            );
        }
        'й' | 'ь' => {
            let stem = strip(1);
            let pre = if last == 'й' && before_last == 'и' {
                "и"
            } else {
                "е"
            };
            add(
                &stem,
                &[("я", GEN | ACC), ("ю", DAT), ("ем", INS), (pre, PRE)],
            );
        }
        _ if gender == Gender::Male => {
            let stem = IRREGULAR_STEMS
                .iter()
                .find(|(n, _)| *n == nominative)
                .map_or(nominative.to_string(), |(_, s)| s.to_string());
            add(
                &stem,
                &[("а", GEN | ACC), ("у", DAT), ("ом", INS), ("е", PRE)],
            );
        }
        _ => {}
    }
    forms
}

struct NameForm {
    nominative: &'static str,
    gender: Gender,
    cases: u8,
}

/// Every case form of every listed first name (`ё` written as `е`), lower-cased.
fn first_names() -> &'static HashMap<String, Vec<NameForm>> {
    static TABLE: OnceLock<HashMap<String, Vec<NameForm>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: HashMap<String, Vec<NameForm>> = HashMap::new();
        let male = MALE_NAMES
            .iter()
            .chain(IRREGULAR_STEMS.iter().map(|(n, _)| n))
            .map(|n| (*n, Gender::Male));
        let female = FEMALE_NAMES.iter().map(|n| (*n, Gender::Female));
        for (nominative, gender) in male.chain(female) {
            for (form, cases) in declensions(nominative, gender) {
                table.entry(fold(&form)).or_default().push(NameForm {
                    nominative,
                    gender,
                    cases,
                });
            }
        }
        table
    })
}

/// Lower case, `ё` as `е`: how names are looked up.
fn fold(word: &str) -> String {
    word.to_lowercase().replace('ё', "е")
}

/// A run of letters (with inner hyphens) in the sentence.
#[derive(Debug, Clone, Copy)]
struct Word<'a> {
    text: &'a str,
    start: usize,
    end: usize,
    /// A full stop follows at once.
    dot: bool,
}

fn words(sentence: &str) -> Vec<Word<'_>> {
    let mut found = Vec::new();
    let mut start: Option<usize> = None;
    let chars: Vec<(usize, char)> = sentence.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        let inner_hyphen =
            c == '-' && start.is_some() && chars.get(k + 1).is_some_and(|(_, d)| d.is_alphabetic());
        if c.is_alphabetic() || inner_hyphen {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            found.push(Word {
                text: &sentence[s..i],
                start: s,
                end: i,
                dot: c == '.',
            });
        }
    }
    if let Some(s) = start {
        found.push(Word {
            text: &sentence[s..],
            start: s,
            end: sentence.len(),
            dot: false,
        });
    }
    found
}

fn is_cyrillic_word(word: &str) -> bool {
    word.chars()
        .all(|c| c == '-' || ('\u{0400}'..='\u{04FF}').contains(&c))
}

/// An initial: one Cyrillic capital (or `Дж`, the initial of a Latin J) followed by a full stop.
fn is_initial(word: &Word) -> bool {
    let mut chars = word.text.chars();
    let one_capital = matches!((chars.next(), chars.next()), (Some(c), None) if c.is_uppercase());
    word.dot && is_cyrillic_word(word.text) && (one_capital || word.text == "Дж")
}

/// A word that can be a surname: Cyrillic, a capital then small letters (not `МВД`).
fn is_surname_word(word: &str) -> bool {
    let mut chars = word.chars();
    let capital = chars.next().is_some_and(char::is_uppercase);
    let rest: Vec<char> = chars.collect();
    capital
        && rest.len() >= 2
        && is_cyrillic_word(word)
        && rest.iter().any(|c| c.is_lowercase())
        && rest
            .iter()
            .zip(rest.iter().skip(1).chain([&' ']))
            .all(|(c, next)| c.is_lowercase() || *c == '-' || next.is_lowercase())
}

/// Whether only spaces separate two byte positions (the full stop of an initial allowed).
fn adjacent(sentence: &str, from: usize, to: usize) -> bool {
    sentence
        .get(from..to)
        .is_some_and(|gap| gap.trim_start_matches('.').chars().all(char::is_whitespace))
}

/// The person names of one sentence, in order.
pub fn find_names(sentence: &str) -> Vec<PersonName> {
    let words = words(sentence);
    let mut names = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if let Some((name, used)) =
            initials_name(sentence, &words, i).or_else(|| first_name_name(sentence, &words, i))
        {
            names.push(name);
            i += used;
        } else {
            i += 1;
        }
    }
    names
}

/// Up to three initials starting at word `i`, only spaces between them.
fn initials_at(sentence: &str, words: &[Word], i: usize) -> usize {
    let mut count = 0;
    while count < 3
        && words.get(i + count).is_some_and(is_initial)
        && (count == 0 || adjacent(sentence, words[i + count - 1].end, words[i + count].start))
    {
        count += 1;
    }
    count
}

/// `А. В. Смирнов` (initials first) or `Смирнов А. В.` starting at word `i`.
fn initials_name(sentence: &str, words: &[Word], i: usize) -> Option<(PersonName, usize)> {
    let count = initials_at(sentence, words, i);
    if count > 0 {
        let last = words[i + count - 1];
        let surname = words
            .get(i + count)
            .filter(|w| is_surname_word(w.text) && adjacent(sentence, last.end, w.start))?;
        let initials: Vec<&str> = words[i..i + count].iter().map(|w| w.text).collect();
        let nominative_surname = surname_after_initials(surname.text);
        let span = words[i].start..surname.end;
        return Some((
            initials_person(sentence, span, &initials, &nominative_surname, true),
            count + 1,
        ));
    }
    let surname = words.get(i).filter(|w| is_surname_word(w.text))?;
    let count = initials_at(sentence, words, i + 1);
    if count == 0 || !adjacent(sentence, surname.end, words[i + 1].start) {
        return None;
    }
    // `Смирнов А. В. Петров`: the initials belong to the surname after them.
    let after = words[i + count];
    let next = words.get(i + count + 1);
    if next.is_some_and(|n| is_surname_word(n.text) && adjacent(sentence, after.end, n.start)) {
        return None;
    }
    let initials: Vec<&str> = words[i + 1..=i + count].iter().map(|w| w.text).collect();
    let span = surname.start..after.end + 1; // the last initial's full stop
    let nominative_surname = surname_after_initials(surname.text);
    Some((
        initials_person(sentence, span, &initials, &nominative_surname, false),
        count + 1,
    ))
}

fn initials_person(
    sentence: &str,
    span: Range<usize>,
    initials: &[&str],
    surname: &str,
    initials_first: bool,
) -> PersonName {
    let dotted: Vec<String> = initials.iter().map(|i| format!("{i}.")).collect();
    let dotted = dotted.join(" ");
    let nominative = if initials_first {
        format!("{dotted} {surname}")
    } else {
        format!("{surname} {dotted}")
    };
    let latin_surname = transliterate(surname);
    PersonName {
        found: sentence[span.clone()].to_string(),
        span,
        nominative,
        latin: format!("{} {latin_surname}", transliterate(&dotted)),
        latin_surname,
        latin_first_name: None,
    }
}

/// The surname's nominative where its ending alone says it, the gender being unknown
/// (initials do not say it): `Карташовым` -> `Карташов`, `Смирновой` -> `Смирнова`,
/// `Смирнову` -> `Смирнов` (a man's dative, far more common in press releases than a woman's
/// accusative), `Вишневского` -> `Вишневский`. Endings that can be a nominative (`Смирнова`,
/// `Шток`) are left as written.
fn surname_after_initials(surname: &str) -> String {
    const RULES: &[(&str, &str)] = &[
        ("овым", "ов"),
        ("евым", "ев"),
        ("ёвым", "ёв"),
        ("иным", "ин"),
        ("ыным", "ын"),
        ("овой", "ова"),
        ("евой", "ева"),
        ("ёвой", "ёва"),
        ("иной", "ина"),
        ("ыной", "ына"),
        ("ову", "ов"),
        ("еву", "ев"),
        ("ёву", "ёв"),
        ("ину", "ин"),
        ("ыну", "ын"),
        ("ове", "ов"),
        ("еве", "ев"),
        ("ёве", "ёв"),
        ("ине", "ин"),
        ("ского", "ский"),
        ("скому", "ский"),
        ("ским", "ский"),
        ("ском", "ский"),
        ("цкого", "цкий"),
        ("цкому", "цкий"),
        ("цким", "цкий"),
        ("цком", "цкий"),
        ("ской", "ская"),
        ("скую", "ская"),
        ("цкой", "цкая"),
        ("цкую", "цкая"),
    ];
    replace_ending(surname, RULES).unwrap_or_else(|| surname.to_string())
}

fn replace_ending(word: &str, rules: &[(&str, &str)]) -> Option<String> {
    rules.iter().find_map(|(ending, nominative)| {
        word.strip_suffix(ending)
            .filter(|stem| stem.chars().count() >= 2)
            .map(|stem| format!("{stem}{nominative}"))
    })
}

/// A listed first name at word `i`, an optional patronymic and the surname after them.
fn first_name_name(sentence: &str, words: &[Word], i: usize) -> Option<(PersonName, usize)> {
    let first = words.get(i).filter(|w| is_surname_word(w.text))?;
    let forms = first_names().get(&fold(first.text))?;
    let mut used = 1;
    let mut last = *first;
    let mut patronymic = None;
    if let Some(next) = words
        .get(i + 1)
        .filter(|w| is_surname_word(w.text) && adjacent(sentence, last.end, w.start))
    {
        if let Some(p) = patronymic_nominative(next.text) {
            patronymic = Some(p);
            used += 1;
            last = *next;
        }
    }
    let surname = words
        .get(i + used)
        .filter(|w| is_surname_word(w.text) && adjacent(sentence, last.end, w.start))
        .filter(|w| first_names().get(&fold(w.text)).is_none());
    if surname.is_none() && patronymic.is_none() {
        return None;
    }
    // The first name's form says gender and case; the surname takes the reading that fits.
    // A form of two names (`Евгении`: a woman's genitive or a man's prepositional) is read
    // as the one name the surname's ending agrees with (`Евгении Смирновой`); when both or
    // neither agree (`Александра Иванова`: Александр Иванов or Александра Иванова), the name
    // is kept as written.
    let reading = |f: &NameForm| (f.nominative, f.gender, f.cases);
    let mut readings: Vec<(&str, Gender, u8)> = Vec::new();
    for form in forms {
        match readings
            .iter_mut()
            .find(|(n, g, _)| *n == form.nominative && *g == form.gender)
        {
            Some(found) => found.2 |= form.cases,
            None => readings.push(reading(form)),
        }
    }
    if readings.len() > 1 {
        let fits = |(_, gender, cases): &&(&str, Gender, u8)| match surname {
            Some(s) => cases & case::NOM != 0 || surname_for(s.text, *gender, *cases) != s.text,
            None => false,
        };
        let fitting: Vec<_> = readings.iter().filter(fits).collect();
        readings = match fitting.as_slice() {
            [one] => vec![**one],
            _ => vec![(first.text, readings[0].1, case::NOM)],
        };
    }
    let (nominative_first, gender, cases) = readings[0];
    let mut parts = vec![nominative_first.to_string()];
    if let Some((p, _)) = &patronymic {
        parts.push(p.clone());
    }
    let mut latin_surname = String::new();
    let end = match surname {
        Some(s) => {
            let nominative = surname_for(s.text, gender, cases);
            latin_surname = transliterate(&nominative);
            parts.push(nominative);
            used += 1;
            s.end
        }
        None => last.end,
    };
    let nominative = parts.join(" ");
    let span = first.start..end;
    Some((
        PersonName {
            found: sentence[span.clone()].to_string(),
            span,
            latin: transliterate(&nominative),
            nominative,
            latin_surname,
            latin_first_name: Some(transliterate(nominative_first)),
        },
        used,
    ))
}

/// A patronymic (`Владимирович`, `Петровны`) in the nominative, with its gender.
fn patronymic_nominative(word: &str) -> Option<(String, Gender)> {
    const MALE: &[(&str, &str)] = &[
        ("вича", "вич"),
        ("вичу", "вич"),
        ("вичем", "вич"),
        ("виче", "вич"),
        ("вич", "вич"),
        ("ьича", "ьич"),
        ("ьичу", "ьич"),
        ("ьичем", "ьич"),
        ("ьиче", "ьич"),
        ("ьич", "ьич"),
    ];
    const FEMALE: &[(&str, &str)] = &[
        ("вны", "вна"),
        ("вне", "вна"),
        ("вну", "вна"),
        ("вной", "вна"),
        ("вна", "вна"),
        ("ичны", "ична"),
        ("ичне", "ична"),
        ("ичну", "ична"),
        ("ичной", "ична"),
        ("ична", "ична"),
    ];
    replace_ending(word, MALE)
        .map(|p| (p, Gender::Male))
        .or_else(|| replace_ending(word, FEMALE).map(|p| (p, Gender::Female)))
}

/// The surname in the nominative, given the gender and the possible cases of the first name
/// before it. Readings are tried from the most specific ending; a surname that fits none
/// (a woman's `Волк`, a nominative) is kept as written.
fn surname_for(surname: &str, gender: Gender, cases: u8) -> String {
    use case::*;
    // (ending, nominative ending, cases the ending stands for)
    const MALE: &[(&str, &str, u8)] = &[
        ("ского", "ский", GEN | ACC),
        ("скому", "ский", DAT),
        ("ским", "ский", INS),
        ("ском", "ский", PRE),
        ("цкого", "цкий", GEN | ACC),
        ("цкому", "цкий", DAT),
        ("цким", "цкий", INS),
        ("цком", "цкий", PRE),
        ("ова", "ов", GEN | ACC),
        ("ову", "ов", DAT),
        ("овым", "ов", INS),
        ("ове", "ов", PRE),
        ("ева", "ев", GEN | ACC),
        ("еву", "ев", DAT),
        ("евым", "ев", INS),
        ("еве", "ев", PRE),
        ("ёва", "ёв", GEN | ACC),
        ("ёву", "ёв", DAT),
        ("ёвым", "ёв", INS),
        ("ёве", "ёв", PRE),
        ("ина", "ин", GEN | ACC),
        ("ину", "ин", DAT),
        ("иным", "ин", INS),
        ("ине", "ин", PRE),
        ("ына", "ын", GEN | ACC),
        ("ыну", "ын", DAT),
        ("ыным", "ын", INS),
        ("ыне", "ын", PRE),
    ];
    const FEMALE: &[(&str, &str, u8)] = &[
        ("ской", "ская", GEN | DAT | INS | PRE),
        ("скую", "ская", ACC),
        ("цкой", "цкая", GEN | DAT | INS | PRE),
        ("цкую", "цкая", ACC),
        ("овой", "ова", GEN | DAT | INS | PRE),
        ("ову", "ова", ACC),
        ("евой", "ева", GEN | DAT | INS | PRE),
        ("еву", "ева", ACC),
        ("ёвой", "ёва", GEN | DAT | INS | PRE),
        ("ёву", "ёва", ACC),
        ("иной", "ина", GEN | DAT | INS | PRE),
        ("ину", "ина", ACC),
        ("ыной", "ына", GEN | DAT | INS | PRE),
        ("ыну", "ына", ACC),
    ];
    if cases & NOM != 0 {
        return surname.to_string();
    }
    let rules = match gender {
        Gender::Male => MALE,
        Gender::Female => FEMALE,
    };
    let fitting = rules.iter().find(|(ending, _, c)| {
        c & cases != 0
            && surname
                .strip_suffix(ending)
                .is_some_and(|s| s.chars().count() >= 2)
    });
    if let Some((ending, nominative, _)) = fitting {
        let stem = &surname[..surname.len() - ending.len()];
        return format!("{stem}{nominative}");
    }
    if gender == Gender::Male {
        // A man's surname in a consonant declines like a noun: `Штока`, `Штоку`, `Штоком`.
        let noun: &[(&str, u8)] = &[("ом", INS), ("а", GEN | ACC), ("у", DAT), ("е", PRE)];
        for (ending, c) in noun {
            if c & cases == 0 {
                continue;
            }
            if let Some(stem) = surname.strip_suffix(ending) {
                let ends_in_consonant = stem
                    .chars()
                    .last()
                    .is_some_and(|c| !"аеёиоуыэюяйь".contains(c));
                if ends_in_consonant && stem.chars().count() >= 2 {
                    return stem.to_string();
                }
            }
        }
    }
    surname.to_string()
}

/// How `translation` wrote `name`. The surname is looked for first: a capitalised word within
/// a quarter of the letters of its transliteration (`Kuznetsova`, `Kouznetsov` for
/// `Kuznetsov`; not `Wolf` for `Volk`), with the initials or first name just before it. Failing
/// that, the transliterated first name with the capitalised words after it (`Irina Wolf`), or a
/// word after initials that starts like the surname (`J. Stock` for `Ю. Шток`): the name is
/// there, but not as its transliteration.
pub fn rendering(name: &PersonName, translation: &str) -> NameRendering {
    let tokens = latin_tokens(translation);
    let capital = |t: &str| t.starts_with(|c: char| c.is_uppercase());
    let is_initial = |t: &str| is_latin_initial(t);
    let close = |a: &str, b: &str, share: usize| {
        let (a, b) = (a.to_lowercase(), b.to_lowercase());
        edit_distance(&a, &b) <= (b.chars().count() / share).max(1)
    };
    // The transliterated words of the name other than the surname (first name, patronymic).
    let given: Vec<&str> = name
        .latin
        .split(' ')
        .filter(|w| *w != name.latin_surname && !w.ends_with('.'))
        .collect();
    let given_or_initial = |t: &str| is_initial(t) || given.iter().any(|g| close(t, g, 4));
    let with_given_before = |k: usize, transliterated: bool| {
        let mut start = k;
        while start > 0 && k - start < 3 && given_or_initial(tokens[start - 1]) {
            start -= 1;
        }
        NameRendering {
            text: Some(tokens[start..=k].join(" ")),
            transliterated,
        }
    };
    if !name.latin_surname.is_empty() {
        let best = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| capital(t) && t.chars().count() > 1 && !is_initial(t))
            .filter(|(_, t)| close(t, &name.latin_surname, 4))
            .min_by_key(|(_, t)| {
                edit_distance(&t.to_lowercase(), &name.latin_surname.to_lowercase())
            });
        if let Some((k, _)) = best {
            return with_given_before(k, true);
        }
    }
    if let Some(first) = &name.latin_first_name {
        if let Some(k) = tokens.iter().position(|t| capital(t) && close(t, first, 4)) {
            let mut end = k;
            while end + 1 < tokens.len() && end - k < 2 && capital(tokens[end + 1]) {
                end += 1;
            }
            return NameRendering {
                text: Some(tokens[k..=end].join(" ")),
                transliterated: name.latin_surname.is_empty(),
            };
        }
    }
    let initial_of_surname = name.latin_surname.chars().next();
    let after_initials = (1..tokens.len()).find(|&k| {
        is_initial(tokens[k - 1])
            && capital(tokens[k])
            && !is_initial(tokens[k])
            && tokens[k].chars().next() == initial_of_surname
            && close(tokens[k], &name.latin_surname, 2)
    });
    match after_initials {
        Some(k) => with_given_before(k, false),
        None => NameRendering {
            text: None,
            transliterated: false,
        },
    }
}

/// The words of an English text with initials kept whole (`A.`), possessive `'s` dropped.
fn latin_tokens(text: &str) -> Vec<&str> {
    text.split(|c: char| c.is_whitespace() || ",;:!?()«»\"“”".contains(c))
        .map(|w| {
            let w = w
                .strip_suffix("'s")
                .or_else(|| w.strip_suffix("’s"))
                .unwrap_or(w);
            if is_latin_initial(w) {
                w
            } else {
                w.trim_end_matches('.')
            }
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// An initial in Latin script: a capital, or the transliteration of one Cyrillic letter (`Ю.`
/// is `Iu.`, `Щ.` is `Shch.`), and a full stop.
fn is_latin_initial(token: &str) -> bool {
    let Some(letters) = token.strip_suffix('.') else {
        return false;
    };
    const DIGRAPHS: &[&str] = &[
        "Zh", "Kh", "Ts", "Ch", "Sh", "Shch", "Iu", "Ia", "Yu", "Ya", "Dzh", "Th",
    ];
    let mut chars = letters.chars();
    let single = chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.next().is_none();
    single || DIGRAPHS.contains(&letters)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (found, nominative, latin) of every name in `sentence`.
    fn names(sentence: &str) -> Vec<(String, String, String)> {
        find_names(sentence)
            .into_iter()
            .map(|n| (n.found, n.nominative, n.latin))
            .collect()
    }

    fn one(sentence: &str) -> (String, String, String) {
        let found = names(sentence);
        assert_eq!(found.len(), 1, "{sentence}: {found:?}");
        found.into_iter().next().unwrap()
    }

    fn check(sentence: &str, found: &str, nominative: &str, latin: &str) {
        let (f, n, l) = one(sentence);
        assert_eq!(
            (f.as_str(), n.as_str(), l.as_str()),
            (found, nominative, latin),
            "{sentence}"
        );
    }

    #[test]
    fn icao_table() {
        assert_eq!(transliterate("Кузнецов"), "Kuznetsov");
        assert_eq!(transliterate("Юлия"), "Iuliia");
        assert_eq!(transliterate("Щукин"), "Shchukin");
        assert_eq!(transliterate("Жуков"), "Zhukov");
        assert_eq!(transliterate("Хабаров"), "Khabarov");
        assert_eq!(transliterate("Цой"), "Tsoi");
        assert_eq!(transliterate("Чехов"), "Chekhov");
        assert_eq!(transliterate("Шишкин"), "Shishkin");
        assert_eq!(transliterate("Подъячев"), "Podieiachev");
        assert_eq!(transliterate("Объедков"), "Obieedkov");
        assert_eq!(transliterate("Крылов"), "Krylov");
        assert_eq!(transliterate("Игорь"), "Igor");
        assert_eq!(transliterate("Эдуард"), "Eduard");
        assert_eq!(transliterate("Яковлев"), "Iakovlev");
        assert_eq!(transliterate("Андрей"), "Andrei");
        assert_eq!(transliterate("Артём"), "Artem");
        assert_eq!(transliterate("Евгений"), "Evgenii");
        assert_eq!(transliterate("ЩУКИН"), "SHCHUKIN");
        assert_eq!(transliterate("Гумилёв-младший"), "Gumilev-mladshii");
        assert_eq!(transliterate("А. В."), "A. V.");
    }

    #[test]
    fn initials_before_the_surname() {
        check(
            "Доклад представил профессор А. В. Смирнов.",
            "А. В. Смирнов",
            "А. В. Смирнов",
            "A. V. Smirnov",
        );
        check(
            "Приказ подписал генерал-лейтенант полиции А.Н. Воронцов.",
            "А.Н. Воронцов",
            "А. Н. Воронцов",
            "A. N. Vorontsov",
        );
        check(
            "Соглашение подписано начальником управления И. П. Карташовым.",
            "И. П. Карташовым",
            "И. П. Карташов",
            "I. P. Kartashov",
        );
        check(
            "Генеральный секретарь Интерпола Ю. Шток выступил с докладом.",
            "Ю. Шток",
            "Ю. Шток",
            "Iu. Shtok",
        );
        check(
            "С приветственным словом выступил Дж. Смит, представитель Европола.",
            "Дж. Смит",
            "Дж. Смит",
            "Dzh. Smit",
        );
    }

    #[test]
    fn case_endings_after_initials() {
        check(
            "Слово дали А. В. Смирнову.",
            "А. В. Смирнову",
            "А. В. Смирнов",
            "A. V. Smirnov",
        );
        check(
            "Письмо О. Л. Кузнецовой.",
            "О. Л. Кузнецовой",
            "О. Л. Кузнецова",
            "O. L. Kuznetsova",
        );
        check(
            "Награду вручили В. С. Вишневскому.",
            "В. С. Вишневскому",
            "В. С. Вишневский",
            "V. S. Vishnevskii",
        );
        // A woman's nominative or a man's genitive: left as written.
        let found = names("Приказ Н. А. Смирновой и С. А. Иванова.");
        assert_eq!(found[0].1, "Н. А. Смирнова");
        assert_eq!(found[1].1, "С. А. Иванова");
    }

    #[test]
    fn initials_after_the_surname() {
        check(
            "Как сообщил Сидоров И.И., проверка завершена.",
            "Сидоров И.И.",
            "Сидоров И. И.",
            "I. I. Sidorov",
        );
        check(
            "Доклад Смирнова А. В. был заслушан.",
            "Смирнова А. В.",
            "Смирнова А. В.",
            "A. V. Smirnova",
        );
    }

    #[test]
    fn several_names_and_a_city_before_initials() {
        let found = names("В состав делегации вошли В. В. Петров, С. А. Иванова и О. Л. Кузнецов.");
        let latin: Vec<&str> = found.iter().map(|n| n.2.as_str()).collect();
        assert_eq!(latin, ["V. V. Petrov", "S. A. Ivanova", "O. L. Kuznetsov"]);
        // `Москве О. А. Баранов`: the initials belong to the surname after them.
        let found = names("Начальник ГУ МВД России по г. Москве О. А. Баранов сообщил.");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].2, "O. A. Baranov");
    }

    #[test]
    fn first_name_and_surname_in_any_case() {
        check(
            "Об этом сообщила Ирина Волк.",
            "Ирина Волк",
            "Ирина Волк",
            "Irina Volk",
        );
        check(
            "По словам Ирины Волк, задержаны трое.",
            "Ирины Волк",
            "Ирина Волк",
            "Irina Volk",
        );
        check(
            "Министр Владимир Колокольцев провёл совещание.",
            "Владимир Колокольцев",
            "Владимир Колокольцев",
            "Vladimir Kolokoltsev",
        );
        check(
            "Награду вручили Владимиру Колокольцеву.",
            "Владимиру Колокольцеву",
            "Владимир Колокольцев",
            "Vladimir Kolokoltsev",
        );
        check(
            "Встреча с Сергеем Ивановым прошла в Москве.",
            "Сергеем Ивановым",
            "Сергей Иванов",
            "Sergei Ivanov",
        );
        check(
            "Письмо Марии Петровой передано.",
            "Марии Петровой",
            "Мария Петрова",
            "Mariia Petrova",
        );
        check(
            "Он поблагодарил Ольгу Смирнову.",
            "Ольгу Смирнову",
            "Ольга Смирнова",
            "Olga Smirnova",
        );
        check(
            "Рядом с Юрием Штоком стояли журналисты.",
            "Юрием Штоком",
            "Юрий Шток",
            "Iurii Shtok",
        );
        check(
            "О Петре Вишневском написано много.",
            "Петре Вишневском",
            "Пётр Вишневский",
            "Petr Vishnevskii",
        );
        check(
            "У Натальи Маковской есть вопросы.",
            "Натальи Маковской",
            "Наталья Маковская",
            "Natalia Makovskaia",
        );
        check(
            "Слово предоставили Павлу Жукову.",
            "Павлу Жукову",
            "Павел Жуков",
            "Pavel Zhukov",
        );
    }

    #[test]
    fn a_form_of_two_first_names_is_kept_as_written() {
        // `Александра`: the genitive of Александр or the nominative of Александра.
        check(
            "Доклад Александра Иванова заслушан.",
            "Александра Иванова",
            "Александра Иванова",
            "Aleksandra Ivanova",
        );
        check(
            "Письмо Евгении Смирновой.",
            "Евгении Смирновой",
            "Евгения Смирнова",
            "Evgeniia Smirnova",
        );
    }

    #[test]
    fn patronymics() {
        check(
            "Доклад Владимира Александровича Колокольцева заслушан.",
            "Владимира Александровича Колокольцева",
            "Владимир Александрович Колокольцев",
            "Vladimir Aleksandrovich Kolokoltsev",
        );
        check(
            "Слово взяла Ирина Владимировна.",
            "Ирина Владимировна",
            "Ирина Владимировна",
            "Irina Vladimirovna",
        );
    }

    #[test]
    fn names_out_of_the_list_and_non_names_are_not_found() {
        assert!(names("Ирина сообщила о задержании.").is_empty());
        assert!(names("Зигфрид Мюллер посетил Москву.").is_empty());
        assert!(names("Сотрудники МВД России задержали подозреваемого.").is_empty());
        assert!(names("Делегация прибыла в г. Лион.").is_empty());
        assert!(names("Волк напал на овец.").is_empty());
        // A first name out of the list is found with initials all the same.
        check(
            "Приказ подписал З. Мюллер.",
            "З. Мюллер",
            "З. Мюллер",
            "Z. Miuller",
        );
    }

    #[test]
    fn spans_point_into_the_sentence() {
        let sentence = "Об этом сообщила Ирина Волк.";
        let name = &find_names(sentence)[0];
        assert_eq!(&sentence[name.span.clone()], "Ирина Волк");
    }

    #[test]
    fn renderings_in_the_translation() {
        let name = &find_names("Об этом сообщила Ирина Волк.")[0];
        let wolf = rendering(name, "This was reported by Irina Wolf.");
        assert_eq!(wolf.text.as_deref(), Some("Irina Wolf"));
        assert!(!wolf.transliterated);
        let volk = rendering(name, "Irina Volk's statement was published.");
        assert_eq!(volk.text.as_deref(), Some("Irina Volk"));
        assert!(volk.transliterated);

        let name = &find_names("Доклад представил профессор А. В. Смирнов.")[0];
        let r = rendering(name, "The report was presented by Professor A. V. Smirnov.");
        assert_eq!(r.text.as_deref(), Some("A. V. Smirnov"));
        assert!(r.transliterated);
        let r = rendering(name, "The report was presented by a professor.");
        assert_eq!(r.text, None);
        assert!(!r.transliterated);

        let name = &find_names("Генеральный секретарь Интерпола Ю. Шток выступил.")[0];
        let r = rendering(name, "Interpol Secretary General J. Stock spoke.");
        assert_eq!(r.text.as_deref(), Some("J. Stock"));
        assert!(
            !r.transliterated,
            "Stock is not the transliteration of Шток"
        );
        let r = rendering(name, "Interpol Secretary General Iu. Shtok spoke.");
        assert_eq!(r.text.as_deref(), Some("Iu. Shtok"));
        assert!(r.transliterated);

        let name = &find_names("Слово дали О. Л. Кузнецовой.")[0];
        let r = rendering(name, "The floor was given to O. L. Kuznetsova.");
        assert_eq!(r.text.as_deref(), Some("O. L. Kuznetsova"));
        let r = rendering(name, "The floor was given to O. Kouznetsova.");
        assert_eq!(r.text.as_deref(), Some("O. Kouznetsova"));
        assert!(r.transliterated);
    }
}
