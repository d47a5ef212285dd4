//! Turning names chosen by others (URL paths, API filenames) into one safe path component.
//!
//! The result never contains a path separator, never is `.` or `..`, has no control characters,
//! is not a reserved device name on Windows, and is at most [`MAX_NAME_BYTES`] bytes of UTF-8
//! (cut on a character boundary, keeping the extension when it is short).

/// Most file systems cap a name at 255 bytes; leave room for `.part.json`.
pub const MAX_NAME_BYTES: usize = 200;

const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// A safe file name for `raw`, or `fallback` when nothing usable is left.
pub fn safe_file_name(raw: &str, fallback: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let trimmed = cleaned
        .trim()
        .trim_start_matches('.')
        .trim_end_matches(['.', ' ']);
    if trimmed.is_empty() {
        return fallback.to_owned();
    }
    let stem = trimmed.split('.').next().unwrap_or_default();
    let name = if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        format!("_{trimmed}")
    } else {
        trimmed.to_owned()
    };
    truncate_keeping_extension(&name, MAX_NAME_BYTES)
}

fn truncate_keeping_extension(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let extension = name
        .rfind('.')
        .map(|dot| &name[dot..])
        .filter(|ext| ext.len() <= 16);
    let ext = extension.unwrap_or("");
    let stem = &name[..name.len() - ext.len()];
    let mut cut = max - ext.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &stem[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_one_safe_component() {
        let table = [
            ("report.csv", "report.csv"),
            ("../../etc/passwd", "_.._etc_passwd"),
            ("..", "fallback"),
            (".", "fallback"),
            ("", "fallback"),
            ("   ", "fallback"),
            ("/absolute/path.txt", "_absolute_path.txt"),
            ("C:\\Windows\\win.ini", "C__Windows_win.ini"),
            ("a\u{0}b\nc\u{7f}.txt", "a_b_c_.txt"),
            (".hidden", "hidden"),
            ("CON", "_CON"),
            ("nul.txt", "_nul.txt"),
            ("trailing. ", "trailing"),
            ("résumé ✓.pdf", "résumé ✓.pdf"),
        ];
        for (raw, expected) in table {
            assert_eq!(safe_file_name(raw, "fallback"), expected, "{raw:?}");
        }
    }

    #[test]
    fn long_names_are_cut_on_a_char_boundary_keeping_the_extension() {
        let long = format!("{}.jsonl", "é".repeat(300));
        let safe = safe_file_name(&long, "x");
        assert!(safe.len() <= MAX_NAME_BYTES);
        assert!(safe.ends_with(".jsonl"));
        assert!(safe.starts_with("éé"));
    }

    #[test]
    fn results_never_contain_separators_or_parent_references() {
        for raw in [
            "../x",
            "a/../../b",
            "..\\..\\c",
            "....//....//",
            "\u{202e}evil/..",
        ] {
            let safe = safe_file_name(raw, "f");
            assert!(!safe.contains('/') && !safe.contains('\\'), "{safe}");
            assert!(
                safe != ".." && safe != "." && !safe.starts_with('.'),
                "{safe}"
            );
        }
    }
}
