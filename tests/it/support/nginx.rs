//! A real nginx on a free loopback port, serving files from a temporary root, with an access
//! log that records each request's Range, If-Range, status and body bytes.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    scheme: &'static str,
}

/// One line of the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub status: u16,
    pub range: String,
    pub if_range: String,
    pub body_bytes: u64,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: String,
}

impl Nginx {
    pub fn start() -> Nginx {
        Nginx::start_with(None)
    }

    /// nginx over TLS (HTTP/2 offered when `http2`), with a certificate for 127.0.0.1 issued by
    /// a CA made for this server: its PEM is [`Nginx::ca_cert`].
    pub fn start_tls(http2: bool) -> Nginx {
        Nginx::start_with(Some(http2))
    }

    /// The CA certificate (PEM) of a TLS server.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn start_with(tls: Option<bool>) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("www")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        if tls.is_some() {
            make_certificates(dir.path());
        }
        for _ in 0..5 {
            let port = free_port();
            let conf = config(dir.path(), port, tls);
            std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
            let mut child = Command::new(nginx_binary())
                .args(["-c", "nginx.conf", "-p"])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx must be installed (apt-get install nginx); .ci/run installs it");
            if wait_until_listening(port, &mut child) {
                let scheme = if tls.is_some() { "https" } else { "http" };
                return Nginx {
                    child,
                    dir,
                    port,
                    scheme,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        panic!("nginx did not start; error.log:\n{log}");
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}://127.0.0.1:{}/{name}", self.scheme, self.port)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    /// Publish `bytes` as `name` (replaced atomically, so nginx never serves half a file).
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let temp = self.dir.path().join("tmp").join(name);
        std::fs::write(&temp, bytes).unwrap();
        std::fs::rename(&temp, self.root().join(name)).unwrap();
    }

    pub fn log(&self) -> Vec<Logged> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines().map(parse_line).collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_line(line: &str) -> Logged {
    let fields: Vec<&str> = line.split('|').collect();
    let dash = |s: &str| {
        if s == "-" {
            String::new()
        } else {
            s.replace("\\x22", "\"")
        }
    };
    Logged {
        status: fields[0].parse().unwrap(),
        range: dash(fields[1]),
        if_range: dash(fields[2]),
        body_bytes: fields[3].parse().unwrap(),
        protocol: fields.get(4).unwrap_or(&"").to_string(),
    }
}

/// A CA and a certificate for 127.0.0.1 it signed (`ca.pem`, `cert.pem`, `key.pem`).
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl must be installed");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=claudedl test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
}

fn config(dir: &Path, port: u16, tls: Option<bool>) -> String {
    let d = dir.display();
    let listen = match tls {
        None => format!("listen 127.0.0.1:{port};"),
        // nginx 1.22 has no `http2 on;`: HTTP/2 is a parameter of `listen`.
        Some(http2) => format!(
            "listen 127.0.0.1:{port} ssl{}; ssl_certificate {d}/cert.pem; \
             ssl_certificate_key {d}/key.pem;",
            if http2 { " http2" } else { "" }
        ),
    };
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n\
           log_format t '$status|$http_range|$http_if_range|$body_bytes_sent|$server_protocol';\n\
           access_log {d}/access.log t;\n\
           client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
           uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
           server {{ {listen} root {d}/www; }}\n\
         }}\n"
    )
}

fn nginx_binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx offers no readiness signal but its port; poll it, bounded to 10 s.
fn wait_until_listening(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
