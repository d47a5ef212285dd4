//! `worker --output s3://bucket/prefix`: downloads go to object storage through the
//! `object_store` crate instead of the data directory (which then only holds staging files).
//!
//! A whole file is staged locally as usual, then stored with one PUT. A segmented file is one
//! multipart upload: its upload id is created once (the file's row locked) and kept in
//! `file_uploads`; every segment is uploaded as part `part` (its item's part number) by
//! whichever worker fetched it, its part id kept with the segment's item; whoever ends the last
//! segment completes the upload, then reads the object back to check its size and take its
//! SHA-256 for the index. Objects are named `prefix/` + the path the data directory would use.
//!
//! Credentials and the region come from the standard AWS environment variables
//! (`AmazonS3Builder::from_env`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, ...); plain `http://` is allowed only for a loopback endpoint. No
//! credential is ever logged: errors name the bucket and key only.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::queue::DonePart;
use super::segment::Sealing;
use super::{FleetError, connection, lock_file, sql};
use crate::store::index::FileOutcome;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("--output {url}: expected s3://BUCKET[/PREFIX]")]
    NotS3 { url: String },
    #[error("--output {url}: {source}")]
    Setup {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("object storage, {key}: {action}: {source}")]
    Store {
        key: String,
        action: &'static str,
        #[source]
        source: object_store::Error,
    },
    #[error("object storage, {key}: {found} bytes once complete, not {size}")]
    Size { key: String, found: u64, size: u64 },
    #[error("object storage, {key}: not the age file of its segments (a chunk does not open)")]
    Sealed { key: String },
}

/// A bucket and a prefix on S3 (or a compatible store).
pub struct Objects {
    store: Arc<AmazonS3>,
    prefix: String,
    bucket: String,
}

/// The bucket and prefix only: the store's configuration holds the credentials.
impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Objects {
    /// The store of `url` (`s3://bucket/prefix`), configured from the environment.
    pub fn from_url(url: &str) -> Result<Objects, ObjectError> {
        let parsed = url::Url::parse(url).map_err(|_| ObjectError::NotS3 { url: url.into() })?;
        let bucket = match (parsed.scheme(), parsed.host_str()) {
            ("s3", Some(bucket)) if !bucket.is_empty() => bucket.to_owned(),
            _ => return Err(ObjectError::NotS3 { url: url.into() }),
        };
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        // `from_env` read `AWS_ENDPOINT_URL` (the only place the environment is read here).
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        if endpoint.as_deref().is_some_and(is_loopback_http) {
            builder = builder.with_allow_http(true);
        }
        let store = builder.build().map_err(|source| ObjectError::Setup {
            url: url.into(),
            source,
        })?;
        Ok(Objects {
            store: Arc::new(store),
            prefix: parsed.path().trim_matches('/').to_owned(),
            bucket,
        })
    }

    /// The object for the data directory's relative path `relative`.
    pub fn key(&self, relative: &str) -> Key {
        match self.prefix.as_str() {
            "" => Key::from(relative),
            prefix => Key::from(format!("{prefix}/{relative}")),
        }
    }

    fn name(&self, key: &Key) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn error(
        &self,
        key: &Key,
        action: &'static str,
    ) -> impl FnOnce(object_store::Error) -> ObjectError {
        let key = self.name(key);
        move |source| ObjectError::Store {
            key,
            action,
            source,
        }
    }

    /// Store `content` as the object `relative` (one PUT).
    pub async fn put(&self, relative: &str, content: Bytes) -> Result<(), ObjectError> {
        let key = self.key(relative);
        self.store
            .put(&key, PutPayload::from(content))
            .await
            .map_err(self.error(&key, "storing"))?;
        Ok(())
    }

    /// The multipart upload of `file_id` to `relative`: the one recorded, or a new one recorded
    /// now (the file's row locked, so that two first segments start one upload).
    pub async fn upload_id(
        &self,
        pool: &Pool,
        file_id: &str,
        relative: &str,
    ) -> Result<String, FleetError> {
        let mut client = connection(pool).await?;
        let tx = lock_file(&mut client, file_id, "locking a file's upload").await?;
        let known = tx
            .query_opt(
                "SELECT upload_id FROM file_uploads WHERE file_id = $1",
                &[&file_id],
            )
            .await
            .map_err(sql("reading a file's upload"))?;
        if let Some(row) = known {
            return Ok(row.get(0));
        }
        let key = self.key(relative);
        let upload = self
            .store
            .create_multipart(&key)
            .await
            .map_err(self.error(&key, "starting a multipart upload"))?;
        tx.execute(
            "INSERT INTO file_uploads (file_id, location, upload_id) VALUES ($1, $2, $3)",
            &[&file_id, &self.name(&key), &upload],
        )
        .await
        .map_err(sql("recording a file's upload"))?;
        tx.commit().await.map_err(sql("committing an upload"))?;
        Ok(upload)
    }

    /// Upload `content` as part `part` (1..=N) of `upload`; returns its part id.
    pub async fn put_part(
        &self,
        relative: &str,
        upload: &str,
        part: i32,
        content: Bytes,
    ) -> Result<String, ObjectError> {
        let key = self.key(relative);
        let index = usize::try_from(part - 1).unwrap_or(0);
        let id = self
            .store
            .put_part(&key, &upload.to_owned(), index, PutPayload::from(content))
            .await
            .map_err(self.error(&key, "uploading a part"))?;
        Ok(id.content_id)
    }

    /// Complete `upload` from `parts` (every part, in order), then read the object back: it
    /// must have `size` bytes; its SHA-256 is the file's.
    pub async fn complete(
        &self,
        relative: &str,
        upload: &str,
        parts: Vec<DonePart>,
        size: u64,
        sealing: Option<&Sealing>,
    ) -> Result<FileOutcome, ObjectError> {
        let key = self.key(relative);
        let ids = parts
            .into_iter()
            .map(|part| PartId {
                content_id: part.etag.unwrap_or_default(),
            })
            .collect();
        let completed = self
            .store
            .complete_multipart(&key, &upload.to_owned(), ids)
            .await;
        if let Err(error) = completed {
            // Completed already by a completer whose transaction then failed (the upload is
            // gone, the object there): the read-back below decides whether it is this file.
            if self.store.head(&key).await.is_err() {
                return Err(self.error(&key, "completing the multipart upload")(error));
            }
        }
        let sha256 = self.hash(&key, size, sealing).await?;
        Ok(FileOutcome::Complete {
            path: relative.to_owned(),
            sha256,
            etag: None,
            retries: 0,
            encrypted: sealing.is_some(),
        })
    }

    /// The SHA-256 of the content of the object `key`, which must hold `size` bytes (as an
    /// age file, every chunk authenticated, when sealed).
    async fn hash(
        &self,
        key: &Key,
        size: u64,
        sealing: Option<&Sealing>,
    ) -> Result<String, ObjectError> {
        let got = self
            .store
            .get(key)
            .await
            .map_err(self.error(key, "reading back"))?;
        let mut stream = got.into_stream();
        let mut plain = Sha256::new();
        let mut sealed = sealing.map(|sealing| sealing.hasher(size));
        let mut found = 0u64;
        let bad = || ObjectError::Sealed {
            key: self.name(key),
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.error(key, "reading back"))?;
            found += chunk.len() as u64;
            match &mut sealed {
                Some(hasher) => hasher.feed(&chunk).map_err(|_| bad())?,
                None => plain.update(&chunk),
            }
        }
        match sealed {
            Some(hasher) => hasher.finish().map_err(|_| bad()),
            None if found != size => Err(ObjectError::Size {
                key: self.name(key),
                found,
                size,
            }),
            None => Ok(hex::encode(plain.finalize())),
        }
    }
}

/// Abort the multipart upload `upload` of the object `location` (`s3://bucket/key`, as
/// `file_uploads` records it), its parts deleted; one already gone counts as aborted.
pub async fn abort_upload(location: &str, upload: &str) -> Result<(), ObjectError> {
    // `location` is a bucket and a prefix as `--output` is: the prefix is the object's key.
    let objects = Objects::from_url(location)?;
    let key = Key::from(objects.prefix.as_str());
    match objects
        .store
        .abort_multipart(&key, &upload.to_owned())
        .await
    {
        Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
        Err(source) => Err(objects.error(&key, "aborting a multipart upload")(source)),
    }
}

/// The bytes `range` of a local file (blocking).
pub fn read_range(path: &std::path::Path, range: Range<u64>) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let mut content = vec![0; (range.end - range.start) as usize];
    file.read_exact_at(&mut content, range.start)?;
    Ok(Bytes::from(content))
}

fn is_loopback_http(endpoint: &str) -> bool {
    url::Url::parse(endpoint).is_ok_and(|url| {
        url.scheme() == "http"
            && match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(name)) => name == "localhost",
                None => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(is_loopback_http("http://127.0.0.1:5000"));
        assert!(is_loopback_http("http://localhost:5000/"));
        assert!(is_loopback_http("http://[::1]:5000"));
        assert!(!is_loopback_http("http://s3.example.com"));
        assert!(!is_loopback_http("https://127.0.0.1:5000"));
    }
}
