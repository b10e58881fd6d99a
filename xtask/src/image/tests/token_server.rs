//! A bearer-token issuer like Docker Hub's auth.docker.io, for `docker-registry`'s `auth: token`
//! mode: it hands any anonymous caller a JWT (RS256, signed with `openssl`) granting the scopes it
//! asked for. With it, a registry on loopback demands the same token dance as Docker Hub.

use super::harness::require_tool;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

pub const SERVICE: &str = "k3s-gvisor-test-registry";
pub const ISSUER: &str = "k3s-gvisor-test-issuer";

pub struct TokenServer {
    /// The URL the registry sends clients to (its `realm`).
    pub realm: String,
    /// The CA bundle the registry trusts tokens from.
    pub cert: PathBuf,
    /// Every token request seen, query string percent-decoded.
    requests: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    pub fn start() -> Result<TokenServer> {
        let openssl = require_tool("openssl", "openssl");
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        run(Command::new(&openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=k3s-gvisor-test-token-issuer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert))?;
        let der = run(Command::new(&openssl)
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert))?;
        // The token carries the signing certificate (x5c); the registry checks it against `cert`.
        let header = format!(
            r#"{{"alg":"RS256","typ":"JWT","x5c":["{}"]}}"#,
            base64(&der, STANDARD)
        );
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let realm = format!("http://{}/token", listener.local_addr()?);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(err) = answer(stream, &openssl, &key, &header, &seen) {
                    eprintln!("token server: {err:#}");
                }
            }
        });
        Ok(TokenServer {
            realm,
            cert,
            requests,
            _dir: dir,
        })
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn run(command: &mut Command) -> Result<Vec<u8>> {
    let out = command.stderr(Stdio::piped()).output()?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// One HTTP exchange: `GET /token?service=...&scope=repository:NAME:pull,push`.
fn answer(
    mut stream: TcpStream,
    openssl: &Path,
    key: &Path,
    header: &str,
    seen: &Mutex<Vec<String>>,
) -> Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            bail!("connection closed mid-request");
        }
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let target = request
        .split_whitespace()
        .nth(1)
        .context("no request target")?;
    let query = percent_decode(target.split_once('?').map_or("", |(_, q)| q));
    seen.lock().unwrap().push(query.clone());

    let access: Vec<String> = query
        .split('&')
        .filter_map(|param| param.strip_prefix("scope="))
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<String> = actions.split(',').map(|a| format!("{a:?}")).collect();
            Some(format!(
                r#"{{"type":{kind:?},"name":{name:?},"actions":[{}]}}"#,
                actions.join(",")
            ))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = format!(
        r#"{{"iss":"{ISSUER}","sub":"","aud":"{SERVICE}","exp":{},"nbf":{},"iat":{},"jti":"{now}-{}","access":[{}]}}"#,
        now + 600,
        now - 60,
        now - 60,
        seen.lock().unwrap().len(),
        access.join(",")
    );
    let signing_input = format!(
        "{}.{}",
        base64(header.as_bytes(), URL_SAFE),
        base64(claims.as_bytes(), URL_SAFE)
    );
    let mut sign = Command::new(openssl)
        .args(["dgst", "-sha256", "-binary", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    sign.stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = sign.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", base64(&signature, URL_SAFE));
    let body = format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":600}}"#);
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const STANDARD: (&[u8; 64], bool) = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    true,
);
const URL_SAFE: (&[u8; 64], bool) = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    false,
);

/// Base64 with the given alphabet, padded or not (JWT wants URL-safe without padding).
fn base64(bytes: &[u8], (alphabet, pad): (&[u8; 64], bool)) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if pad {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}
