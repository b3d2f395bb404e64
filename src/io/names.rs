//! Release ids into file names that stay inside the output folder and never collide.
//!
//! Ids come from file stems and, worse, from JSONL lines anyone can write: `../../etc/x`,
//! `a/b`, `C:\x`, NUL bytes, `CON`, or the names of our own batch files (`digest`, `report`).

use std::collections::HashSet;

/// Longest file stem we make, in bytes (file systems allow 255 for the whole name).
const MAX_STEM_BYTES: usize = 120;

/// Names Windows reserves in every folder, and the stems of the batch's own files.
const RESERVED: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9", "digest",
    "report",
];

/// A file stem for `id`: separators, control and shell-hostile characters become `_`, leading
/// dots and trailing dots/spaces go, reserved names get a `_` prefix, long ids are cut.
/// The result is never empty, never `.`/`..`, and contains no path separator.
pub fn safe_stem(id: &str) -> String {
    let replaced: String = id
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let trimmed = replaced
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' ']);
    let mut stem = cut_to_bytes(trimmed, MAX_STEM_BYTES).to_string();
    if stem.is_empty() {
        stem = "release".to_string();
    }
    let base = stem
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if RESERVED.contains(&base.as_str()) {
        stem.insert(0, '_');
    }
    stem
}

fn cut_to_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Hands out distinct stems in input order: the second `a` becomes `a-2`, and so on.
/// Comparison ignores case, so two releases never share a file on case-insensitive disks.
#[derive(Debug, Default)]
pub struct NameAllocator {
    taken: HashSet<String>,
}

impl NameAllocator {
    pub fn allocate(&mut self, id: &str) -> String {
        let stem = safe_stem(id);
        let mut candidate = stem.clone();
        let mut n = 2;
        while !self.taken.insert(candidate.to_lowercase()) {
            candidate = format!("{stem}-{n}");
            n += 1;
        }
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_ids_stay_inside_the_folder() {
        for id in [
            "../../etc/x",
            "a/b",
            "C:\\x\\y",
            "nul\0byte",
            "..",
            ".",
            "",
            " . ",
            "/",
        ] {
            let stem = safe_stem(id);
            assert!(!stem.is_empty(), "{id:?}");
            assert!(!stem.contains(['/', '\\', '\0']), "{id:?} -> {stem:?}");
            assert!(!stem.starts_with('.'), "{id:?} -> {stem:?}");
            let path = std::path::Path::new("out").join(format!("{stem}.md"));
            assert_eq!(path.parent(), Some(std::path::Path::new("out")), "{id:?}");
        }
        assert_eq!(safe_stem("../../etc/x"), "_.._etc_x");
    }

    #[test]
    fn reserved_names_are_prefixed() {
        assert_eq!(safe_stem("CON"), "_CON");
        assert_eq!(safe_stem("com1.txt"), "_com1.txt");
        assert_eq!(safe_stem("digest"), "_digest");
        assert_eq!(safe_stem("report"), "_report");
        assert_eq!(safe_stem("console"), "console");
    }

    #[test]
    fn long_ids_are_cut_on_a_character_boundary() {
        let stem = safe_stem(&"я".repeat(200));
        assert!(stem.len() <= MAX_STEM_BYTES);
        assert!(stem.chars().all(|c| c == 'я'));
    }

    #[test]
    fn duplicates_get_distinct_names() {
        let mut names = NameAllocator::default();
        let got: Vec<String> = ["a", "A", "a", "a-2", "a/b", "a_b"]
            .iter()
            .map(|id| names.allocate(id))
            .collect();
        assert_eq!(got, ["a", "A-2", "a-3", "a-2-2", "a_b", "a_b-2"]);
    }
}
