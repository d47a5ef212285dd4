//! The deterministic demo data set behind `claudedl demo`.

use bytes::Bytes;

use super::clock::{DAY_SECS, Timestamp};
use super::files::{generated_bytes, splitmix64};
use super::{FileSet, MockApiConfig, MockBatch, MockFile, MockResult};

const DEMO_SEED: u64 = 0x00C1_A0DE_D0DE_2026;
const FILE_COUNT: usize = 300;
/// 2026-06-01T00:00:00Z; files spread over 92 days from there.
const FILES_START_SECS: i64 = 1_780_272_000;
const FILES_SPAN_SECS: i64 = 92 * DAY_SECS;
/// 2026-07-01T00:00:00Z: generated batches are created a day apart from there.
const BATCHES_START_SECS: i64 = 1_782_864_000;
const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// Three big files (so parallel ranges show), at these indexes, with these sizes.
const LARGE_FILES: [(usize, usize); 3] =
    [(250, 4 * MIB + 123_457), (275, 6 * MIB), (299, 8 * MIB - 1)];
/// Uploaded files (listed, not downloadable): every index with this remainder.
const UPLOADED: (usize, usize) = (30, 11);
const EXPIRED: [usize; 3] = [5, 95, 185];
/// MIME type, extension and filename stem of each kind.
const KINDS: [(&str, &str, &str); 5] = [
    ("text/csv", "csv", "sales"),
    ("application/json", "json", "analysis"),
    ("image/png", "png", "chart"),
    ("application/pdf", "pdf", "summary"),
    ("text/plain", "txt", "log"),
];

/// The demo data set: 300 files over June–August 2026 (mostly 1–64 KiB, about ten of
/// 256 KiB–2 MiB, three of 4–8 MiB; csv, json, png, pdf and txt), ten not downloadable, three
/// expired, hostile filenames (`../../etc/passwd`, `CON.txt`, a 400-byte name, one with a
/// newline and an escape sequence), a duplicated filename, and two ended batches of 1,000 and
/// 250 results of every type. The same on every call.
pub fn demo_config() -> MockApiConfig {
    let files = (0..FILE_COUNT).map(demo_file).collect();
    MockApiConfig::new(FileSet::Explicit(files)).with_batches(vec![
        demo_batch(1, "2026-07-15T09:30:00Z", 1000),
        demo_batch(2, "2026-08-20T14:00:00Z", 250),
    ])
}

fn demo_file(index: usize) -> MockFile {
    let hash = splitmix64(DEMO_SEED ^ index as u64);
    let (mime_type, extension, stem) = KINDS[(hash % KINDS.len() as u64) as usize];
    let step = FILES_SPAN_SECS / FILE_COUNT as i64;
    let jitter = (hash >> 20) as i64 % step;
    let created = Timestamp::from_secs(FILES_START_SECS + index as i64 * step + jitter);
    let size = demo_size(index, hash);
    MockFile {
        id: format!("file_011C{}", base62(hash, 20)),
        filename: demo_filename(index, stem, extension),
        mime_type: mime_type.to_owned(),
        created_at: created.to_rfc3339(),
        downloadable: index % UPLOADED.0 != UPLOADED.1,
        expired: EXPIRED.contains(&index),
        content: demo_content(extension, hash, size),
    }
}

fn demo_size(index: usize, hash: u64) -> usize {
    if let Some((_, size)) = LARGE_FILES.iter().find(|(at, _)| *at == index) {
        return *size;
    }
    let spread = (hash >> 8) as usize;
    if index % 29 == 7 {
        256 * KIB + spread % (2 * MIB - 256 * KIB)
    } else {
        KIB + spread % (63 * KIB)
    }
}

fn demo_filename(index: usize, stem: &str, extension: &str) -> String {
    match index {
        17 => "../../etc/passwd".to_owned(),
        58 => "CON.txt".to_owned(),
        123 => long_filename(400),
        201 => "notes\n\u{1b}[31mred\u{7}.txt".to_owned(),
        80 | 81 => "quarterly-report.csv".to_owned(),
        150 => "résumé – final.pdf".to_owned(),
        _ => format!("{stem}-{index:03}.{extension}"),
    }
}

/// A `.txt` filename of exactly `len` bytes.
fn long_filename(len: usize) -> String {
    let mut name = String::from("an-extremely-long-filename-");
    while name.len() < len - 4 {
        name.push(char::from(b'a' + (name.len() % 26) as u8));
    }
    name.push_str(".txt");
    name
}

/// Text lines for text kinds, random bytes behind a magic number for binary ones.
fn demo_content(extension: &str, hash: u64, size: usize) -> Bytes {
    let mut content = match extension {
        "png" => b"\x89PNG\r\n\x1a\n".to_vec(),
        "pdf" => b"%PDF-1.7\n".to_vec(),
        _ => return text_content(extension, hash, size),
    };
    content.extend_from_slice(&generated_bytes(
        hash,
        0,
        size.saturating_sub(content.len()),
    ));
    content.truncate(size);
    Bytes::from(content)
}

fn text_content(extension: &str, hash: u64, size: usize) -> Bytes {
    let mut text = String::with_capacity(size + 64);
    if extension == "csv" {
        text.push_str("id,name,value\n");
    }
    let mut row = 0_u64;
    while text.len() < size {
        let value = splitmix64(hash ^ row) % 100_000;
        let line = match extension {
            "csv" => format!("{row},item-{row},{value}\n"),
            "json" => format!("{{\"row\":{row},\"value\":{value}}}\n"),
            _ => format!("line {row}: value {value}\n"),
        };
        text.push_str(&line);
        row += 1;
    }
    text.truncate(size);
    Bytes::from(text)
}

fn demo_batch(number: u64, created_at: &str, count: usize) -> MockBatch {
    seeded_batch(DEMO_SEED, number, created_at, count)
}

/// `count` ended batches of `results` results each (every result type, as the demo's), ids
/// derived from `seed`, created a day apart from 2026-07-01 (`claudedl-mock --batches N:R`).
pub fn generated_batches(count: usize, results: usize, seed: u64) -> Vec<MockBatch> {
    (1..=count as u64)
        .map(|number| {
            let created = Timestamp::from_secs(BATCHES_START_SECS + number as i64 * DAY_SECS);
            seeded_batch(seed, number, &created.to_rfc3339(), results)
        })
        .collect()
}

fn seeded_batch(seed: u64, number: u64, created_at: &str, count: usize) -> MockBatch {
    let results = (0..count)
        .map(|k| MockResult::new(format!("req-{number}-{k:05}"), demo_result_type(k)))
        .collect();
    let id = format!("msgbatch_01{}", base62(splitmix64(seed ^ number << 32), 22));
    MockBatch::ended(id, created_at, results)
}

fn demo_result_type(k: usize) -> &'static str {
    match k {
        _ if k % 20 == 3 => "errored",
        _ if k % 50 == 9 => "canceled",
        _ if k % 100 == 42 => "expired",
        _ => "succeeded",
    }
}

/// `len` base-62 characters derived from `seed`.
fn base62(seed: u64, len: usize) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = splitmix64(state);
            char::from(DIGITS[(state % DIGITS.len() as u64) as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_data_matches_its_description() {
        let config = demo_config();
        let FileSet::Explicit(files) = &config.files else {
            panic!("the demo lists explicit files");
        };
        assert_eq!(files.len(), 300);
        let uploaded = files.iter().filter(|file| !file.downloadable).count();
        let expired = files.iter().filter(|file| file.expired).count();
        let large = files
            .iter()
            .filter(|file| file.content.len() >= 4 * MIB)
            .count();
        assert_eq!((uploaded, expired, large), (10, 3, 3));
        assert!(
            files
                .iter()
                .all(|file| file.content.len() >= KIB && file.content.len() < 8 * MIB)
        );
        assert_eq!(files[123].filename.len(), 400);
        let mut ids: Vec<&str> = files.iter().map(|file| file.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 300);
        assert!(
            files
                .windows(2)
                .all(|pair| pair[0].created_at < pair[1].created_at)
        );
        assert_eq!(files[0].created_at.get(..7), Some("2026-06"));
        assert_eq!(files[299].created_at.get(..7), Some("2026-08"));
        let counts: Vec<usize> = config
            .batches
            .iter()
            .map(|batch| batch.results.len())
            .collect();
        assert_eq!(counts, [1000, 250]);
        assert_eq!(demo_config(), config);
    }
}
