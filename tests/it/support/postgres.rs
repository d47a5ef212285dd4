//! A throwaway PostgreSQL cluster shared by the tests of one process: `initdb` in a temporary
//! directory, the server on a Unix socket in it (no TCP), durability off (fsync,
//! synchronous_commit, full_page_writes). Each test takes a fresh database of its own.
//!
//! initdb refuses to run as root (CI runs as root), so as root every server command runs as the
//! `postgres` user in a directory it owns. A watchdog started before initdb (in its own session,
//! so a ^C to the test run does not reach it) stops the server with `-m immediate` and removes
//! the directory once this process is gone, however it ends: statics are never dropped, and a
//! panic or a kill must not leave a server behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server's port: it only names the socket file (`.s.PGSQL.5432`) in our own directory.
const PORT: u16 = 5432;

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

/// One test's database.
pub struct TestDb {
    /// A connection string for `--db` / `CLAUDEDL_DB` / `PgIndex::connect`.
    pub url: String,
    pub name: String,
}

/// The cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

/// A fresh, empty database on the shared cluster.
pub fn database() -> TestDb {
    cluster().create_database()
}

/// A second cluster, started on first use, that also listens on `127.0.0.1` with TLS: a
/// certificate for `localhost` signed by a test CA, both made here with the `openssl` CLI
/// (`Cluster::tls_file`: `ca.crt`, and `other-ca.crt` that signed nothing). The role
/// [`CERT_USER`] may log in over TCP only with a client certificate the test CA signed
/// (`client.crt`, `client.key`); every other role is trusted.
pub fn tls_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start_with(true))
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(false)
    }

    fn start_with(tls: bool) -> Cluster {
        let bin = server_bin();
        let dir = PathBuf::from(
            String::from_utf8(
                as_server_user("mktemp")
                    .args(["-d", "/tmp/claudedl-pg.XXXXXX"])
                    .output()
                    .expect("mktemp")
                    .stdout,
            )
            .unwrap()
            .trim(),
        );
        assert!(dir.is_dir(), "mktemp made no directory");
        start_watchdog(&dir, &bin);
        let data = dir.join("data");
        run(as_server_user(bin.join("initdb"))
            .args(["--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8"])
            .arg("-D")
            .arg(&data));
        let (port, listen) = if tls {
            make_certificates(&dir);
            write_hba(&dir);
            let port = free_port();
            let tls = format!(
                "-c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={0}/server.crt \
                 -c ssl_key_file={0}/server.key -c ssl_ca_file={0}/ca.crt \
                 -c hba_file={0}/pg_hba.conf",
                dir.display()
            );
            (port, tls)
        } else {
            (PORT, "-c listen_addresses=''".to_owned())
        };
        let options = format!(
            "-k {} -p {port} {listen} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            dir.display()
        );
        run(as_server_user(bin.join("pg_ctl"))
            .args(["start", "-w", "-s", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-o", &options]));
        let cluster = Cluster { dir, bin, port };
        if tls {
            cluster.psql(
                "postgres",
                &format!("CREATE ROLE {CERT_USER} LOGIN SUPERUSER"),
            );
        }
        cluster
    }

    /// The TCP port (TLS clusters) or the socket's number.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A file the TLS cluster's setup made (`ca.crt`, `other-ca.crt`, `client.crt`,
    /// `client.key`).
    pub fn tls_file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A fresh, empty database on this cluster.
    pub fn database(&self) -> TestDb {
        self.create_database()
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={database}",
            self.dir.display(),
            self.port
        )
    }

    fn create_database(&self) -> TestDb {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        TestDb {
            url: self.url(&name),
            name,
        }
    }

    /// Run `sql` with psql on `database`; its output, unaligned and without headers.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }
}

/// A port nobody listens on now (bound and released; the server takes it next).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

/// The role of the TLS cluster that logs in with a client certificate.
pub const CERT_USER: &str = "certuser";

/// The TLS cluster's `pg_hba.conf`: [`CERT_USER`] over TCP by certificate only, the rest trusted.
fn write_hba(dir: &Path) {
    let hba = format!(
        "local all all trust\nhostssl all {CERT_USER} 127.0.0.1/32 cert\n\
         host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
    );
    std::fs::write(dir.join("pg_hba.conf"), hba).expect("writing pg_hba.conf");
}

/// In `dir`, as the server's user: a CA (`ca.crt`), the server's key and certificate for
/// `localhost`/`127.0.0.1` signed by it, a client's for [`CERT_USER`] signed by it
/// (`client.key`, `client.crt`), and another CA (`other-ca.crt`) that signed nothing.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        run(as_server_user("openssl")
            .current_dir(dir)
            .args(["req", "-x509", "-days", "2", "-subj"])
            .arg(format!("/CN=claudedl test {ca}"))
            .args(ec)
            .args([
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ]));
    }
    run(as_server_user("openssl")
        .current_dir(dir)
        .args(["req", "-subj", "/CN=localhost", "-keyout", "server.key"])
        .args(ec)
        .args(["-out", "server.csr"]));
    run(as_server_user("sh").current_dir(dir).args([
        "-c",
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext && openssl x509 -req \
         -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext \
         -out server.crt && chmod 600 server.key",
    ]));
    run(as_server_user("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-subj",
            &format!("/CN={CERT_USER}"),
            "-keyout",
            "client.key",
        ])
        .args(ec)
        .args(["-out", "client.csr"]));
    run(as_server_user("sh").current_dir(dir).args([
        "-c",
        "printf 'extendedKeyUsage=clientAuth\\n' > client.ext && openssl x509 -req -in client.csr \
         -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.crt",
    ]));
}

/// The newest installed server's binaries (Debian keeps them out of `PATH`).
fn server_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql; .ci/run does)")
        .map(|entry| entry.unwrap().path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `program` as the `postgres` user when we are root, as ourselves otherwise.
fn as_server_user(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("starting a PostgreSQL command");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Once this process is gone: stop the server at once and remove its directory.
fn start_watchdog(dir: &Path, bin: &Path) {
    let stop = if is_root() {
        "runuser -u postgres -- \"$2/pg_ctl\""
    } else {
        "\"$2/pg_ctl\""
    };
    let script = format!(
        "while [ -d /proc/$1 ]; do sleep 0.2; done; \
         {stop} stop -m immediate -s -D \"$3/data\" >/dev/null 2>&1; rm -rf \"$3\""
    );
    // `-f`: setsid forks and returns at once; the watchdog lives on in its own session.
    let status = Command::new("setsid")
        .args(["-f", "sh", "-c", &script, "watchdog"])
        .arg(std::process::id().to_string())
        .arg(bin)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("starting the cluster's watchdog");
    assert!(status.success(), "setsid: {status}");
}
