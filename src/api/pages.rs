//! Walking a list endpoint page by page (Files in either shape, Message Batches), and the one
//! rule that ends a listing that loops: a page that points to another must bring at least one id
//! not listed before, and must point to a cursor not followed before. A server that breaks it
//! (a `next_page` that repeats, beta `has_more` with the same `last_id`, pages of ids already
//! seen) would otherwise be listed forever.

use std::collections::HashSet;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use url::Url;

use super::ApiError;
use super::client::{ApiClient, Cursor};
use super::types::{Batch, FileObject, Page};
use crate::http::redact::redact_url;

/// Something a list endpoint returns, known by its id.
pub trait Listed: DeserializeOwned {
    /// The list endpoint, as path segments below the base URL.
    const ENDPOINT: &'static [&'static str];

    fn id(&self) -> &str;

    /// The query parameter that carries `cursor`.
    fn cursor_param(cursor: &Cursor) -> (&'static str, &str) {
        match cursor {
            Cursor::Page(page) => ("page", page),
            Cursor::AfterId(id) => ("after_id", id),
        }
    }
}

impl Listed for FileObject {
    const ENDPOINT: &'static [&'static str] = &["v1", "files"];

    fn id(&self) -> &str {
        &self.id
    }
}

impl Listed for Batch {
    const ENDPOINT: &'static [&'static str] = &["v1", "messages", "batches"];

    fn id(&self) -> &str {
        &self.id
    }

    /// Batches page by id only.
    fn cursor_param(cursor: &Cursor) -> (&'static str, &str) {
        match cursor {
            Cursor::Page(id) | Cursor::AfterId(id) => ("after_id", id),
        }
    }
}

/// Why a listing was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Loop {
    #[error("points again to a page it already listed ({0})")]
    RepeatedCursor(String),
    #[error("holds no id that was not already listed ({items} items), yet points to another page")]
    NoNewIds { items: usize },
}

/// The pages of one list endpoint, newest first, read one at a time.
#[derive(Debug)]
pub struct Pages<'a, T> {
    api: &'a ApiClient,
    limit: u32,
    /// Where the next request starts (`Some(None)`: the first page); `None` after the last page.
    next: Option<Option<Cursor>>,
    guard: LoopGuard,
    requests: u64,
    items: PhantomData<fn() -> T>,
}

impl<'a, T: Listed> Pages<'a, T> {
    pub(super) fn new(api: &'a ApiClient, limit: u32) -> Self {
        Pages {
            api,
            limit,
            next: Some(None),
            guard: LoopGuard::default(),
            requests: 0,
            items: PhantomData,
        }
    }

    /// The next page, or `None` after the last one. A page that breaks the rule of this module
    /// ends the listing with [`ApiError::ListingLoop`], naming the request-id of that page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<T>>, ApiError> {
        let Some(cursor) = self.next.take() else {
            return Ok(None);
        };
        let url = self.url(cursor.as_ref());
        let (page, request_id) = self.api.get_json::<Page<T>>(url.clone()).await?;
        self.requests += 1;
        let (items, next) = split_page(page);
        let ids = items.iter().map(Listed::id);
        if let Err(reason) = self.guard.page(cursor, ids, next.as_ref()) {
            return Err(ApiError::ListingLoop {
                url: redact_url(&url),
                requests: self.requests,
                request_id,
                reason,
            });
        }
        self.next = next.map(Some);
        Ok(Some(items))
    }

    /// List requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    fn url(&self, cursor: Option<&Cursor>) -> Url {
        let mut url = self.api.endpoint(T::ENDPOINT);
        url.query_pairs_mut()
            .append_pair("limit", &self.limit.to_string());
        if let Some(cursor) = cursor {
            let (name, value) = T::cursor_param(cursor);
            url.query_pairs_mut().append_pair(name, value);
        }
        url
    }
}

/// Where a page says the next one starts, in either shape.
pub(super) fn split_page<T>(page: Page<T>) -> (Vec<T>, Option<Cursor>) {
    let next = match (page.next_page, page.has_more, page.last_id) {
        (Some(page), _, _) => Some(Cursor::Page(page)),
        (None, Some(true), Some(last)) => Some(Cursor::AfterId(last)),
        _ => None,
    };
    (page.data, next)
}

/// The cursors followed and the ids listed so far.
#[derive(Debug, Default)]
struct LoopGuard {
    followed: HashSet<Option<Cursor>>,
    listed: HashSet<String>,
}

impl LoopGuard {
    /// Records the page read at `cursor` and judges where it points (`next`; `None`: the end).
    fn page<'i>(
        &mut self,
        cursor: Option<Cursor>,
        ids: impl Iterator<Item = &'i str>,
        next: Option<&Cursor>,
    ) -> Result<(), Loop> {
        self.followed.insert(cursor);
        let mut items = 0;
        let mut new = 0;
        for id in ids {
            items += 1;
            new += usize::from(self.listed.insert(id.to_owned()));
        }
        let Some(next) = next else {
            return Ok(());
        };
        if self.followed.contains(&Some(next.clone())) {
            let (Cursor::Page(shown) | Cursor::AfterId(shown)) = next;
            return Err(Loop::RepeatedCursor(shown.clone()));
        }
        if new == 0 {
            return Err(Loop::NoNewIds { items });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(
        guard: &mut LoopGuard,
        at: Option<&str>,
        ids: &[&str],
        next: Option<&str>,
    ) -> Result<(), Loop> {
        let cursor = |c: &str| Cursor::Page(c.to_owned());
        guard.page(
            at.map(cursor),
            ids.iter().copied(),
            next.map(cursor).as_ref(),
        )
    }

    #[test]
    fn either_page_shape_yields_the_next_cursor() {
        let ga = Page::<u8> {
            data: vec![],
            next_page: Some("page_2".into()),
            has_more: None,
            last_id: None,
        };
        assert_eq!(split_page(ga).1, Some(Cursor::Page("page_2".into())));
        let beta = Page::<u8> {
            data: vec![],
            next_page: None,
            has_more: Some(true),
            last_id: Some("f".into()),
        };
        assert_eq!(split_page(beta).1, Some(Cursor::AfterId("f".into())));
        let last = Page::<u8> {
            data: vec![],
            next_page: None,
            has_more: Some(false),
            last_id: Some("f".into()),
        };
        assert_eq!(split_page(last).1, None);
    }

    #[test]
    fn a_walk_with_fresh_cursors_and_new_ids_goes_on() {
        let mut guard = LoopGuard::default();
        assert_eq!(page(&mut guard, None, &["a", "b"], Some("p2")), Ok(()));
        // Overlap is tolerated as long as something is new.
        assert_eq!(
            page(&mut guard, Some("p2"), &["b", "c"], Some("p3")),
            Ok(())
        );
        // The last page may repeat ids: it points nowhere.
        assert_eq!(page(&mut guard, Some("p3"), &["c"], None), Ok(()));
    }

    #[test]
    fn a_cursor_followed_before_stops_the_walk() {
        let mut guard = LoopGuard::default();
        page(&mut guard, None, &["a"], Some("p2")).unwrap();
        assert_eq!(
            page(&mut guard, Some("p2"), &["b"], Some("p2")),
            Err(Loop::RepeatedCursor("p2".into()))
        );
        let mut beta = LoopGuard::default();
        let after = |id: &str| Some(Cursor::AfterId(id.to_owned()));
        beta.page(None, ["a"].into_iter(), after("a").as_ref())
            .unwrap();
        assert_eq!(
            beta.page(after("a"), ["b"].into_iter(), after("a").as_ref()),
            Err(Loop::RepeatedCursor("a".into()))
        );
    }

    #[test]
    fn a_page_without_new_ids_that_points_on_stops_the_walk() {
        let mut guard = LoopGuard::default();
        page(&mut guard, None, &["a", "b"], Some("p2")).unwrap();
        assert_eq!(
            page(&mut guard, Some("p2"), &["a", "b"], Some("p3")),
            Err(Loop::NoNewIds { items: 2 })
        );
        let mut empty = LoopGuard::default();
        assert_eq!(
            page(&mut empty, None, &[], Some("p2")),
            Err(Loop::NoNewIds { items: 0 })
        );
    }
}
