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

/// Longest id kept whole in a name; a longer one is cut and marked with its hash.
const MAX_ID_BYTES: usize = 96;

/// An id (a file's, a batch's) as one safe name component, injective over ids: an id made only
/// of ASCII letters, digits, `_` and `-` (every id the API issues), and short enough, stays as it
/// is; any other is sanitised, cut to `MAX_ID_BYTES` (96) and suffixed with `~` and a hash of the raw
/// id, so `file_c/d`, `file_c_d` and `file_c?d` get three names. Plain ids never contain `~`.
pub fn safe_id(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(id));
    if plain {
        return id.to_owned();
    }
    hashed_id(id)
}

/// An id as one safe name component that always carries the hash of the id (`file_x~1a2b…`):
/// distinct from every [`safe_id`] of another id, for a name [`safe_id`] would share.
pub fn hashed_id(id: &str) -> String {
    let cleaned: String = safe_file_name(id, "id")
        .chars()
        .map(|c| if c == '~' { '_' } else { c })
        .collect();
    let mut cut = cleaned.len().min(MAX_ID_BYTES);
    while !cleaned.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{}", &cleaned[..cut], id_hash(id))
}

/// The first 12 hex digits of the SHA-256 of `id`.
fn id_hash(id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    hex::encode(&digest[..6])
}

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

pub(crate) fn truncate_keeping_extension(name: &str, max: usize) -> String {
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
    fn ids_map_to_distinct_names() {
        assert_eq!(
            safe_id("file_011CNha8iCJcU1wXNR6q4V8w"),
            "file_011CNha8iCJcU1wXNR6q4V8w"
        );
        let names: std::collections::HashSet<String> = [
            "file_c/d",
            "file_c_d",
            "file_c?d",
            "file_c\\d",
            "file_c:d",
            "..",
            ".",
            "",
            "~",
            "file_c_d~0",
            "a".repeat(200).as_str(),
            format!("{}b", "a".repeat(199)).as_str(),
            "CON",
            "_CON",
        ]
        .iter()
        .map(|id| safe_id(id))
        .collect();
        assert_eq!(names.len(), 14, "{names:?}");
        for name in &names {
            assert_eq!(safe_file_name(name, "x"), *name, "already safe: {name}");
            assert!(name.len() <= MAX_ID_BYTES + 13, "{name}");
        }
        assert!(safe_id("file_c/d").starts_with("file_c_d~"));
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
