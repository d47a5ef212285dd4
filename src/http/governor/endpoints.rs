//! Endpoint failover: the API's base URL first, then the backups, in order. A streak of
//! 503/529 on the endpoint in use benches it for the overload pause and moves on to the next
//! one that is not benched; once the pause is over, the preferred endpoint is used again.

use std::time::Duration;

use tokio::time::Instant;
use url::Url;

/// 503/529 answers in a row that make an endpoint overloaded.
pub const OVERLOAD_STREAK: u32 = 3;

#[derive(Debug)]
pub struct Endpoints {
    list: Vec<Endpoint>,
    in_use: usize,
    pause: Duration,
}

#[derive(Debug)]
struct Endpoint {
    base: Url,
    streak: u32,
    benched_until: Option<Instant>,
}

/// What an overloaded answer leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overload {
    /// Not a streak yet.
    Counting,
    /// The endpoint was benched and requests move to another (redacted base URLs).
    Switched { from: String, to: String },
    /// No other endpoint to go to: the whole process should back off; `streak` so far.
    NowhereElse { streak: u32 },
}

impl Endpoints {
    /// `list[0]` is preferred; an empty list routes nothing.
    pub fn new(list: Vec<Url>, pause: Duration) -> Endpoints {
        let list = list
            .into_iter()
            .map(|base| Endpoint {
                base,
                streak: 0,
                benched_until: None,
            })
            .collect();
        Endpoints {
            list,
            in_use: 0,
            pause,
        }
    }

    /// Which endpoint `url` belongs to, and the same request on the endpoint in use now.
    /// URLs of other origins pass unchanged. Returns the index of the endpoint used and the
    /// redacted bases when the preferred endpoint took over again after its pause.
    pub fn route(&mut self, url: &Url, now: Instant) -> Routed {
        let Some(tail) = self.list.iter().find_map(|e| tail_after(&e.base, url)) else {
            return Routed {
                url: url.clone(),
                endpoint: None,
                returned: None,
            };
        };
        let returned = self.prefer_rested(now);
        let base = &self.list[self.in_use].base;
        let url = join_tail(base, &tail).unwrap_or_else(|| url.clone());
        Routed {
            url,
            endpoint: Some(self.in_use),
            returned,
        }
    }

    /// An endpoint answered 503/529.
    pub fn overloaded(&mut self, index: usize, now: Instant) -> Overload {
        let endpoint = &mut self.list[index];
        endpoint.streak += 1;
        if endpoint.streak < OVERLOAD_STREAK {
            return Overload::Counting;
        }
        let streak = endpoint.streak;
        if index != self.in_use {
            return Overload::Counting;
        }
        let next = (0..self.list.len()).find(|&i| i != index && !self.is_benched(i, now));
        let Some(next) = next else {
            return Overload::NowhereElse { streak };
        };
        let from = redact(&self.list[index].base);
        self.list[index].benched_until = Some(now + self.pause);
        self.list[index].streak = 0;
        self.in_use = next;
        Overload::Switched {
            from,
            to: redact(&self.list[next].base),
        }
    }

    /// An endpoint answered normally.
    pub fn succeeded(&mut self, index: usize) {
        self.list[index].streak = 0;
    }

    fn is_benched(&self, index: usize, now: Instant) -> bool {
        self.list[index]
            .benched_until
            .is_some_and(|until| until > now)
    }

    /// Move back to the most preferred endpoint whose pause is over.
    fn prefer_rested(&mut self, now: Instant) -> Option<(String, String)> {
        let best = (0..self.in_use).find(|&i| !self.is_benched(i, now))?;
        let from = redact(&self.list[self.in_use].base);
        self.list[best].benched_until = None;
        self.in_use = best;
        Some((from, redact(&self.list[best].base)))
    }
}

/// Where a request goes.
#[derive(Debug)]
pub struct Routed {
    pub url: Url,
    pub endpoint: Option<usize>,
    /// `(from, to)` when this routing moved back to a rested endpoint.
    pub returned: Option<(String, String)>,
}

/// The part of `url` after `base` (same origin, under its path), if it is there.
fn tail_after(base: &Url, url: &Url) -> Option<String> {
    if base.origin() != url.origin() {
        return None;
    }
    let prefix = base.path().trim_end_matches('/');
    let rest = url.path().strip_prefix(prefix)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    Some(format!("{rest}{query}"))
}

fn join_tail(base: &Url, tail: &str) -> Option<Url> {
    let prefix = base.as_str().trim_end_matches('/');
    Url::parse(&format!("{prefix}{tail}")).ok()
}

fn redact(url: &Url) -> String {
    crate::http::redact::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> Vec<Url> {
        vec![
            Url::parse("http://127.0.0.1:1").unwrap(),
            Url::parse("http://127.0.0.1:2/proxy/").unwrap(),
        ]
    }

    fn route(endpoints: &mut Endpoints, url: &str, now: Instant) -> String {
        endpoints
            .route(&Url::parse(url).unwrap(), now)
            .url
            .to_string()
    }

    #[test]
    fn a_streak_switches_to_the_backup_and_the_pause_brings_it_back() {
        let now = Instant::now();
        let pause = Duration::from_secs(600);
        let mut endpoints = Endpoints::new(urls(), pause);
        let file = "http://127.0.0.1:1/v1/files/f?x=1";
        assert_eq!(route(&mut endpoints, file, now), file);
        assert_eq!(endpoints.overloaded(0, now), Overload::Counting);
        assert_eq!(endpoints.overloaded(0, now), Overload::Counting);
        assert!(matches!(
            endpoints.overloaded(0, now),
            Overload::Switched { .. }
        ));
        assert_eq!(
            route(&mut endpoints, file, now),
            "http://127.0.0.1:2/proxy/v1/files/f?x=1"
        );
        let later = now + pause;
        let routed = endpoints.route(&Url::parse(file).unwrap(), later);
        assert_eq!(routed.url.as_str(), file);
        assert!(routed.returned.is_some());
    }

    #[test]
    fn a_success_breaks_the_streak() {
        let now = Instant::now();
        let mut endpoints = Endpoints::new(urls(), Duration::from_secs(1));
        endpoints.overloaded(0, now);
        endpoints.overloaded(0, now);
        endpoints.succeeded(0);
        assert_eq!(endpoints.overloaded(0, now), Overload::Counting);
    }

    #[test]
    fn without_a_backup_the_streak_grows() {
        let now = Instant::now();
        let mut endpoints = Endpoints::new(urls()[..1].to_vec(), Duration::from_secs(1));
        for _ in 0..2 {
            endpoints.overloaded(0, now);
        }
        assert_eq!(
            endpoints.overloaded(0, now),
            Overload::NowhereElse { streak: 3 }
        );
        assert_eq!(
            endpoints.overloaded(0, now),
            Overload::NowhereElse { streak: 4 }
        );
    }

    #[test]
    fn other_origins_and_sibling_paths_are_not_routed() {
        let now = Instant::now();
        let mut endpoints = Endpoints::new(urls(), Duration::from_secs(1));
        let other = "https://files.example/v1/x";
        assert_eq!(route(&mut endpoints, other, now), other);
        let routed = endpoints.route(&Url::parse("http://127.0.0.1:2/proxyx/a").unwrap(), now);
        assert!(routed.endpoint.is_none());
    }
}
