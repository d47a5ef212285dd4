//! The bodies of the fake API: where their bytes come from ([`BodySource`]), and the route they
//! are counted for ([`CountedBody`]). Generated content is produced chunk by chunk and never held
//! in memory whole; streaming, cuts and stalls are [`crate::http::body`]'s.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;

use super::files::generated_bytes;
use super::{Route, Shared};
use crate::http::body::{BodySender, ChunkSource, Ending, Pacer};
use crate::http::serve::Flushes;

/// Where the bytes of a body come from.
#[derive(Debug, Clone)]
pub(super) enum BodySource {
    Bytes(Bytes),
    /// Bytes `range` of generated content with this key (see [`generated_bytes`]).
    Generated {
        key: u64,
        range: Range<u64>,
    },
}

impl BodySource {
    pub(super) fn len(&self) -> u64 {
        match self {
            BodySource::Bytes(bytes) => bytes.len() as u64,
            BodySource::Generated { range, .. } => range.end - range.start,
        }
    }

    /// The sub-range `range` (relative to this source).
    pub(super) fn slice(&self, range: Range<u64>) -> BodySource {
        match self {
            BodySource::Bytes(bytes) => {
                BodySource::Bytes(bytes.slice(to_usize(range.start)..to_usize(range.end)))
            }
            BodySource::Generated { key, range: own } => BodySource::Generated {
                key: *key,
                range: own.start + range.start..own.start + range.end,
            },
        }
    }

    /// Keeps at most the first `limit` bytes.
    fn truncate(&mut self, limit: u64) {
        let len = self.len().min(limit);
        *self = self.slice(0..len);
    }
}

impl ChunkSource for BodySource {
    fn remaining(&self) -> u64 {
        self.len()
    }

    fn take(&mut self, len: usize) -> Bytes {
        match self {
            BodySource::Bytes(bytes) => bytes.split_to(len),
            BodySource::Generated { key, range } => {
                let chunk = generated_bytes(*key, range.start, len);
                range.start += len as u64;
                chunk
            }
        }
    }
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// A successful body: its bytes, the route they are counted for, and how it ends.
#[derive(Debug, Clone)]
pub(super) struct CountedBody {
    pub(super) source: BodySource,
    pub(super) route: Route,
    pub(super) ending: Ending,
}

impl CountedBody {
    pub(super) fn complete(source: BodySource, route: Route) -> Self {
        CountedBody {
            source,
            route,
            ending: Ending::Complete,
        }
    }

    /// Sends only the first `limit` bytes, then ends as `ending` says.
    pub(super) fn cut(&mut self, limit: u64, ending: Ending) {
        self.source.truncate(limit);
        self.ending = ending;
    }

    pub(super) fn into_stream(
        self,
        shared: &Arc<Shared>,
        flushes: Flushes,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let (counter, route) = (Arc::clone(shared), self.route);
        let count = move |bytes| counter.count_sent(route, bytes);
        // The cap in tenths of a second, so that a body starts at once and stays smooth.
        let pacer = shared.connection_cap.map(|rate| {
            Pacer::new(
                usize::try_from(rate / 10).unwrap_or(usize::MAX),
                std::time::Duration::from_millis(100),
            )
        });
        BodySender::new(
            self.source,
            self.ending,
            count,
            shared.shutdown.subscribe(),
            flushes,
        )
        .with_pacer(pacer)
        .into_stream()
    }
}
