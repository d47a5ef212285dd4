//! `claudedl-floor LIST DIR [--no-sync] [--sharded]`: fetch every URL of LIST (one a line)
//! into DIR, 16 at once, each with one ranged GET on a pooled keep-alive connection, its body
//! read whole and hashed (SHA-256), written into an unnamed file (`O_TMPFILE`) and linked under
//! its final name by one thread; one `syncfs` at the end makes every file durable. That is
//! claudedl's per-file work (a hash, an unnamed file given its name, durability) with none of
//! its bookkeeping: no retries, no progress, no output, no budget, no resume, a panic on any
//! error; and less than its guarantees (contents are not durable before the names are, so a
//! crash may leave a name on an empty file). The benchmark runs it beside claudedl to show how
//! much of claudedl's time is its own.
//!
//! - `--no-sync`: without the `syncfs`, as curl, wget and aria2c run (their files are written
//!   back after they exit): the difference is what durability costs on the machine.
//! - `--sharded`: one thread per core, each with a current-thread runtime, its own client and
//!   its share of the list and of the 16 at once, instead of one multi-thread runtime (where a
//!   response, its connection's task and the next request may each run on another worker).

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use sha2::Digest;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const FILES_AT_ONCE: usize = 16;

/// An unnamed file and the name it is to have.
type ToLink = (std::fs::File, String);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [list, dir, options @ ..] = &args[1..] else {
        panic!("usage: claudedl-floor LIST DIR [--no-sync] [--sharded]");
    };
    let durable = !options.iter().any(|o| o == "--no-sync");
    let sharded = options.iter().any(|o| o == "--sharded");
    let list = std::fs::read_to_string(list).expect("reading the list");
    let urls: Vec<String> = list
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    std::fs::create_dir_all(dir).expect("creating the directory");
    let (to_link, linker) = std::sync::mpsc::channel::<ToLink>();
    let linking = std::thread::spawn(move || {
        for (file, path) in linker {
            link(&file, &path);
        }
    });
    if sharded {
        let shards = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads: Vec<_> = (0..shards)
            .map(|shard| {
                let mine = urls.iter().skip(shard).step_by(shards).cloned().collect();
                let (dir, to_link) = (dir.clone(), to_link.clone());
                let at_once = (FILES_AT_ONCE / shards).max(1);
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime");
                    runtime.block_on(fetch_all(mine, dir, to_link, at_once));
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a shard panicked");
        }
    } else {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(fetch_all(urls, dir.clone(), to_link.clone(), FILES_AT_ONCE));
    }
    drop(to_link);
    linking.join().expect("the linker panicked");
    if durable {
        let root = rustix::fs::open(dir.as_str(), OFlags::RDONLY, Mode::empty()).expect("opening");
        rustix::fs::syncfs(root).expect("syncfs");
    }
}

/// Fetch each of `urls`, `at_once` at a time, into `dir`; hand each file to the linker.
async fn fetch_all(urls: Vec<String>, dir: String, to_link: Sender<ToLink>, at_once: usize) {
    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building the client");
    let dir = Arc::new(dir);
    let slots = Arc::new(tokio::sync::Semaphore::new(at_once));
    let mut fetches = tokio::task::JoinSet::new();
    for url in urls {
        let slot = Arc::clone(&slots).acquire_owned().await.expect("open");
        let (client, dir, to_link) = (client.clone(), Arc::clone(&dir), to_link.clone());
        fetches.spawn(async move {
            let body = client
                .get(&url)
                .header("range", "bytes=0-1048575")
                .send()
                .await
                .expect("sending")
                .bytes()
                .await
                .expect("reading");
            drop(slot);
            let sha256 = hex::encode(sha2::Sha256::digest(&body));
            let name = url.rsplit('/').next().expect("a name");
            let file = stage(&dir, &body);
            to_link
                .send((file, format!("{dir}/{name}")))
                .expect("the linker runs");
            std::hint::black_box(sha256);
        });
        while let Some(fetched) = fetches.try_join_next() {
            fetched.expect("a fetch panicked");
        }
    }
    while let Some(fetched) = fetches.join_next().await {
        fetched.expect("a fetch panicked");
    }
}

/// Write `body` into an unnamed file of `dir`.
fn stage(dir: &str, body: &[u8]) -> std::fs::File {
    let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(CWD, dir, flags, Mode::from(0o666)).expect("O_TMPFILE");
    let mut file = std::fs::File::from(fd);
    file.write_all(body).expect("writing");
    file
}

/// Give the unnamed `file` its name `path`.
fn link(file: &std::fs::File, path: &str) {
    let unnamed = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
    rustix::fs::linkat(CWD, unnamed.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW).expect("linking");
}
