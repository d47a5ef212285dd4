//! The age v1 file format, the parts we write ourselves: the header (recipient stanzas and its
//! MAC), the payload nonce and key, and the STREAM chunks, sealed and opened one by one so that
//! they can be written in any order.
//!
//! ```text
//! age-encryption.org/v1\n
//! -> X25519 <ephemeral share>\n<wrapped file key, base64, 64 columns>\n   (one per recipient)
//! --- <base64 HMAC-SHA256 of everything up to and including "---">\n
//! <16-byte nonce> <chunk 0> <chunk 1> … <chunk n-1>
//! ```
//!
//! Chunk `i` holds plaintext bytes `i·64 KiB ..` sealed with ChaCha20-Poly1305 under the payload
//! key `HKDF-SHA256(ikm = file key, salt = nonce, info = "payload")`, with the 12-byte nonce
//! `i` (11 bytes, big-endian) ‖ `0x01` for the last chunk, `0x00` otherwise. Every chunk but the
//! last holds exactly 64 KiB; the last holds 1..=64 KiB, or 0 bytes only when the whole
//! plaintext is empty. So the size of the plaintext fixes where every chunk lies.
//! (Checked against `age/src/primitives/stream.rs`, `age/src/format.rs` and `age/src/keys.rs`
//! of str4d/rage 0.12, and against the `age` CLI by the tests.)

use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza};
use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use base64::Engine;
use base64::prelude::BASE64_STANDARD_NO_PAD;
use hmac::{Hmac, Mac};
use zeroize::Zeroizing;

/// Plaintext bytes per chunk.
pub const CHUNK: u64 = 64 * 1024;
/// The Poly1305 tag after each chunk.
pub const TAG: u64 = 16;
/// The payload nonce between the header and the first chunk.
pub const NONCE: usize = 16;
/// A full chunk, sealed.
pub const SEALED_CHUNK: u64 = CHUNK + TAG;

const MAGIC: &[u8] = b"age-encryption.org/v1\n";
const MAC_TAG: &[u8] = b"---";

/// How many chunks `plain` bytes take (an empty plaintext is one empty chunk).
pub fn chunk_count(plain: u64) -> u64 {
    plain.div_ceil(CHUNK).max(1)
}

/// The index of the chunk holding plaintext byte `offset`.
pub fn chunk_of(offset: u64) -> u64 {
    offset / CHUNK
}

/// Plaintext bytes of chunk `index` in a file of `plain` bytes.
pub fn chunk_len(plain: u64, index: u64) -> u64 {
    plain.saturating_sub(index * CHUNK).min(CHUNK)
}

/// Where chunk `index` starts in the age file.
pub fn chunk_offset(header_len: u64, index: u64) -> u64 {
    header_len + NONCE as u64 + index * SEALED_CHUNK
}

/// The size of the age file holding `plain` bytes behind a header of `header_len` bytes.
pub fn sealed_len(header_len: u64, plain: u64) -> u64 {
    header_len + NONCE as u64 + plain + chunk_count(plain) * TAG
}

/// A fresh random file key.
pub fn new_file_key() -> FileKey {
    FileKey::init_with_mut(|key| rand::fill(&mut key[..]))
}

/// A fresh random payload nonce.
pub fn new_nonce() -> [u8; NONCE] {
    rand::random()
}

/// The header for `stanzas` (the file key wrapped to each recipient), MAC included.
pub fn header(file_key: &FileKey, stanzas: &[Stanza]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for stanza in stanzas {
        write_stanza(&mut out, stanza);
    }
    out.extend_from_slice(MAC_TAG);
    let mac = header_mac(file_key, &out);
    out.push(b' ');
    out.extend_from_slice(BASE64_STANDARD_NO_PAD.encode(mac).as_bytes());
    out.push(b'\n');
    out
}

/// Whether `header` (as written by [`header`]) carries the MAC of `file_key`.
pub fn header_matches(file_key: &FileKey, header: &[u8]) -> bool {
    let Some(body) = header.strip_suffix(b"\n") else {
        return false;
    };
    let Some(split) = body.windows(4).rposition(|w| w == b"--- ") else {
        return false;
    };
    let (covered, encoded) = (&body[..split + MAC_TAG.len()], &body[split + 4..]);
    let Ok(mac) = BASE64_STANDARD_NO_PAD.decode(encoded) else {
        return false;
    };
    let mut hmac = hmac_for(file_key);
    hmac.update(covered);
    hmac.verify_slice(&mac).is_ok()
}

/// `-> tag args…\n` then the body in base64, 64 columns, ending with a short (maybe empty) line.
fn write_stanza(out: &mut Vec<u8>, stanza: &Stanza) {
    out.extend_from_slice(b"-> ");
    out.extend_from_slice(stanza.tag.as_bytes());
    for arg in &stanza.args {
        out.push(b' ');
        out.extend_from_slice(arg.as_bytes());
    }
    out.push(b'\n');
    let encoded = BASE64_STANDARD_NO_PAD.encode(&stanza.body);
    let mut lines = encoded.as_bytes().chunks(64).peekable();
    while let Some(line) = lines.next() {
        out.extend_from_slice(line);
        out.push(b'\n');
        if lines.peek().is_none() && line.len() == 64 {
            out.push(b'\n');
        }
    }
    if encoded.is_empty() {
        out.push(b'\n');
    }
}

fn hmac_for(file_key: &FileKey) -> Hmac<sha2_digest10::Sha256> {
    let key = Zeroizing::new(age_core::primitives::hkdf(
        &[],
        b"header",
        file_key.expose_secret(),
    ));
    <Hmac<sha2_digest10::Sha256> as Mac>::new_from_slice(&key[..])
        .expect("HMAC takes any key length")
}

fn header_mac(file_key: &FileKey, covered: &[u8]) -> [u8; 32] {
    let mut hmac = hmac_for(file_key);
    hmac.update(covered);
    hmac.finalize().into_bytes().into()
}

/// The key that seals and opens the payload's chunks.
pub struct PayloadKey {
    aead: LessSafeKey,
}

/// A chunk that failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

impl PayloadKey {
    pub fn new(file_key: &FileKey, nonce: &[u8; NONCE]) -> PayloadKey {
        let key = Zeroizing::new(age_core::primitives::hkdf(
            nonce,
            b"payload",
            file_key.expose_secret(),
        ));
        let key = UnboundKey::new(&CHACHA20_POLY1305, &key[..]).expect("a 32-byte key");
        PayloadKey {
            aead: LessSafeKey::new(key),
        }
    }

    /// Append chunk `index`'s sealed form (`plain` then its tag) to `out`.
    pub fn seal_into(&self, index: u64, last: bool, plain: &[u8], out: &mut Vec<u8>) {
        debug_assert!(plain.len() as u64 <= CHUNK);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .aead
            .seal_in_place_separate_tag(chunk_nonce(index, last), Aad::empty(), &mut out[start..])
            .expect("a chunk is far below ChaCha20's limit");
        out.extend_from_slice(tag.as_ref());
    }

    /// Authenticate and decrypt sealed chunk `index` in place; returns the plaintext part.
    pub fn open<'a>(
        &self,
        index: u64,
        last: bool,
        sealed: &'a mut [u8],
    ) -> Result<&'a [u8], BadChunk> {
        self.aead
            .open_in_place(chunk_nonce(index, last), Aad::empty(), sealed)
            .map(|plain| &*plain)
            .map_err(|_| BadChunk)
    }
}

/// The STREAM nonce: the chunk counter as 11 big-endian bytes, then the last-chunk flag.
fn chunk_nonce(index: u64, last: bool) -> Nonce {
    Nonce::assume_unique_for_key(nonce_bytes(index, last))
}

fn nonce_bytes(index: u64, last: bool) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[3..11].copy_from_slice(&index.to_be_bytes());
    nonce[11] = u8::from(last);
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_chunking_rules() {
        assert_eq!(chunk_count(0), 1);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(CHUNK), 1);
        assert_eq!(chunk_count(CHUNK + 1), 2);
        assert_eq!(sealed_len(100, 0), 100 + 16 + 16);
        assert_eq!(sealed_len(100, 2 * CHUNK), 100 + 16 + 2 * SEALED_CHUNK);
        assert_eq!(sealed_len(100, CHUNK + 5), 100 + 16 + SEALED_CHUNK + 5 + 16);
        assert_eq!(chunk_len(CHUNK + 5, 1), 5);
        assert_eq!(chunk_len(CHUNK + 5, 0), CHUNK);
        assert_eq!(chunk_offset(100, 2), 116 + 2 * SEALED_CHUNK);
    }

    #[test]
    fn the_nonce_is_the_counter_then_the_flag() {
        assert_eq!(
            nonce_bytes(0x0102, true),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 1]
        );
        assert_eq!(nonce_bytes(0, false), [0; 12]);
    }

    #[test]
    fn seal_and_open_agree_on_index_and_flag() {
        let key = PayloadKey::new(&new_file_key(), &new_nonce());
        let plain: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut sealed = Vec::new();
        key.seal_into(3, false, &plain, &mut sealed);
        assert_eq!(sealed.len(), plain.len() + TAG as usize);
        let mut copy = sealed.clone();
        assert_eq!(key.open(3, false, &mut copy).unwrap(), &plain[..]);
        let mut copy = sealed.clone();
        assert_eq!(key.open(3, true, &mut copy), Err(BadChunk), "wrong flag");
        let mut copy = sealed.clone();
        assert_eq!(key.open(4, false, &mut copy), Err(BadChunk), "wrong index");
    }

    #[test]
    fn the_header_mac_binds_the_file_key() {
        let key = new_file_key();
        let stanza = Stanza {
            tag: "X25519".into(),
            args: vec!["abc".into()],
            body: vec![7; 48],
        };
        let bytes = header(&key, &[stanza]);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("age-encryption.org/v1\n-> X25519 abc\n"));
        // 48 bytes encode to exactly 64 columns, so an empty line must follow.
        assert!(
            text.contains(&format!("\n{}\n\n---", "BwcH".repeat(16))),
            "{text}"
        );
        assert!(header_matches(&key, &bytes));
        assert!(!header_matches(&new_file_key(), &bytes));
    }
}
