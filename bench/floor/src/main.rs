//! `claudedl-floor LIST DIR`: fetch every URL of LIST (one a line) into DIR, 16 at once, each
//! with one ranged GET on a pooled keep-alive connection, its body read whole and hashed
//! (SHA-256), written into an unnamed file (`O_TMPFILE`) and linked under its final name; one
//! `syncfs` at the end makes every file durable. That is claudedl's per-file work (a hash, an
//! unnamed file given its name, durability) with none of its bookkeeping: no retries, no
//! progress, no output, no budget, no resume, a panic on any error; and less than its
//! guarantees (contents are not durable before the names are, so a crash may leave a name on an
//! empty file). The benchmark runs it beside claudedl to show how much of claudedl's time is
//! its own.

use std::io::Write;
use std::sync::Arc;

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use sha2::Digest;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const FILES_AT_ONCE: usize = 16;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, list, dir] = args.as_slice() else {
        panic!("usage: claudedl-floor LIST DIR");
    };
    let list = std::fs::read_to_string(list).expect("reading the list");
    let dir = Arc::new(dir.clone());
    std::fs::create_dir_all(dir.as_str()).expect("creating the directory");
    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building the client");
    let (to_link, linker) = std::sync::mpsc::channel::<(std::fs::File, String)>();
    let linking = std::thread::spawn(move || {
        for (file, path) in linker {
            link(&file, &path);
        }
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(FILES_AT_ONCE));
    let mut fetches = tokio::task::JoinSet::new();
    for url in list.lines().filter(|line| !line.is_empty()) {
        let slot = Arc::clone(&slots).acquire_owned().await.expect("open");
        let (client, dir, url) = (client.clone(), Arc::clone(&dir), url.to_owned());
        let to_link = to_link.clone();
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
    drop(to_link);
    linking.join().expect("the linker panicked");
    let root = rustix::fs::open(dir.as_str(), OFlags::RDONLY, Mode::empty()).expect("opening");
    rustix::fs::syncfs(root).expect("syncfs");
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
