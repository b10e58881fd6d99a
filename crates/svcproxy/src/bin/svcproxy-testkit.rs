//! Test and benchmark helper for svcproxy (not shipped in the bundle): the backends and clients
//! the integration test and the benchmark run in their network namespaces. Plain std and
//! threads: it must run anywhere the test does, inside gVisor included, with nothing else
//! installed (busybox's nc has no UDP mode, and no wrk is needed).
//!
//!   svcproxy-testkit serve --name NAME [--http ADDR] [--udp ADDR]
//!       HTTP/1.1 (keep-alive) answering every request with NAME; UDP answering every
//!       datagram with NAME.
//!   svcproxy-testkit get ADDR [--count N]
//!       N requests, one connection each; prints each body on its own line.
//!   svcproxy-testkit udp ADDR [--count N]
//!       N datagrams, each from a fresh socket (a new flow); prints "BODY from SOURCE" or
//!       "timeout" per datagram.
//!   svcproxy-testkit load ADDR [--seconds S] [--connections C] [--new-connections]
//!       closed-loop HTTP load; prints one line: requests, rps, p50, p90, p99, max, errors.
//!   svcproxy-testkit dnsflood ADDR [--count N] [--name NAME]
//!       N DNS queries (A NAME), each from a fresh socket (a new port, as resolvers use),
//!       100 in flight at a time, answers waited for up to 200 ms per batch; prints
//!       "sent N answered M in T ms (Q queries/s)".
//!   svcproxy-testkit hold ADDR [--count N]
//!       opens N TCP connections and keeps them idle; prints "held N of COUNT" once they are
//!       open (connections refused or reset are not counted) and then waits until killed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: svcproxy-testkit serve --name NAME [--http ADDR] [--udp ADDR]\n\
         \x20      svcproxy-testkit get ADDR [--count N]\n\
         \x20      svcproxy-testkit udp ADDR [--count N]\n\
         \x20      svcproxy-testkit load ADDR [--seconds S] [--connections C] [--new-connections]\n\
         \x20      svcproxy-testkit dnsflood ADDR [--count N] [--name NAME]\n\
         \x20      svcproxy-testkit hold ADDR [--count N]"
    );
    exit(2)
}

/// `--key value` options and flags after the positional arguments.
struct Options(Vec<String>);

impl Options {
    fn value(&self, key: &str) -> Option<&str> {
        let at = self.0.iter().position(|a| a == key)?;
        Some(
            self.0
                .get(at + 1)
                .map(String::as_str)
                .unwrap_or_else(|| usage()),
        )
    }
    fn number(&self, key: &str, default: u64) -> u64 {
        self.value(key)
            .map(|v| v.parse().unwrap_or_else(|_| usage()))
            .unwrap_or(default)
    }
    fn flag(&self, key: &str) -> bool {
        self.0.iter().any(|a| a == key)
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|_| {
        eprintln!("not an IP:port: {text}");
        exit(2)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else { usage() };
    match command.as_str() {
        "serve" => serve(&Options(args[1..].to_vec())),
        "get" | "udp" | "load" | "dnsflood" | "hold" => {
            let target = addr(args.get(1).unwrap_or_else(|| usage()));
            let options = Options(args[2..].to_vec());
            match command.as_str() {
                "get" => get(target, options.number("--count", 1)),
                "udp" => udp(target, options.number("--count", 1)),
                "dnsflood" => dnsflood(
                    target,
                    options.number("--count", 10000),
                    options
                        .value("--name")
                        .unwrap_or("kubernetes.default.svc.cluster.local"),
                ),
                "hold" => hold(target, options.number("--count", 2000)),
                _ => load(
                    target,
                    Duration::from_secs(options.number("--seconds", 10)),
                    options.number("--connections", 8) as usize,
                    options.flag("--new-connections"),
                ),
            }
        }
        _ => usage(),
    }
}

fn serve(options: &Options) {
    let name = options
        .value("--name")
        .unwrap_or_else(|| usage())
        .to_string();
    let mut threads = Vec::new();
    if let Some(at) = options.value("--udp") {
        let socket = UdpSocket::bind(addr(at)).unwrap_or_else(|e| {
            eprintln!("udp bind {at}: {e}");
            exit(1)
        });
        let name = name.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(name.as_bytes(), from);
                }
            }
        }));
    }
    if let Some(at) = options.value("--http") {
        let listener = TcpListener::bind(addr(at)).unwrap_or_else(|e| {
            eprintln!("tcp bind {at}: {e}");
            exit(1)
        });
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let name = name.clone();
                std::thread::spawn(move || http_connection(stream, &name));
            }
        }));
    }
    if threads.is_empty() {
        usage()
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Answers requests on one connection until the client closes it or asks to.
fn http_connection(stream: TcpStream, name: &str) {
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut close = false;
        let mut line = String::new();
        // Request line, then headers up to the blank line.
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => {
                    if line.to_ascii_lowercase().starts_with("connection: close") {
                        close = true;
                    }
                }
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{}\r\n{name}",
            name.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if writer.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// One request on `stream`; returns the body.
fn request(stream: &mut BufReader<TcpStream>, close: bool) -> std::io::Result<String> {
    let request = if close {
        "GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n"
    } else {
        "GET / HTTP/1.1\r\nHost: svc\r\n\r\n"
    };
    stream.get_mut().write_all(request.as_bytes())?;
    let mut line = String::new();
    if stream.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    if !line.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("bad status line {line:?}")));
    }
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn connect(target: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(BufReader::new(stream))
}

fn get(target: SocketAddr, count: u64) {
    let mut failed = false;
    for _ in 0..count {
        match connect(target).and_then(|mut s| request(&mut s, true)) {
            Ok(body) => println!("{body}"),
            Err(e) => {
                println!("error: {e}");
                failed = true;
            }
        }
    }
    exit(if failed { 1 } else { 0 })
}

fn udp(target: SocketAddr, count: u64) {
    let mut failed = false;
    for _ in 0..count {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("binding a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = socket.send_to(b"ping", target);
        let mut buf = [0u8; 2048];
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => println!("{} from {from}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => {
                println!("timeout ({e})");
                failed = true;
            }
        }
    }
    exit(if failed { 1 } else { 0 })
}

/// A DNS query for `name`, type A, class IN, recursion desired.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn dnsflood(target: SocketAddr, count: u64, name: &str) {
    const BATCH: u64 = 100;
    let started = Instant::now();
    let (mut sent, mut answered) = (0u64, 0u64);
    while sent < count {
        let n = BATCH.min(count - sent);
        let mut sockets = Vec::new();
        for i in 0..n {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("binding a UDP socket");
            socket.set_nonblocking(true).unwrap();
            if socket
                .send_to(&dns_query((sent + i) as u16, name), target)
                .is_ok()
            {
                sockets.push(socket);
            }
        }
        sent += n;
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut buf = [0u8; 1500];
        while !sockets.is_empty() && Instant::now() < deadline {
            sockets.retain(|s| match s.recv_from(&mut buf) {
                Ok(_) => {
                    answered += 1;
                    false
                }
                Err(_) => true,
            });
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let ms = started.elapsed().as_millis().max(1);
    println!(
        "sent {sent} answered {answered} in {ms} ms ({} queries/s)",
        sent as u128 * 1000 / ms
    );
}

fn hold(target: SocketAddr, count: u64) {
    let mut held = Vec::new();
    for _ in 0..count {
        if let Ok(stream) = TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
            held.push(stream);
        }
    }
    // A reset shows up on the first read: only keep connections still open after a moment.
    std::thread::sleep(Duration::from_millis(500));
    let mut buf = [0u8; 1];
    held.retain(|s| {
        s.set_nonblocking(true).unwrap();
        matches!(s.peek(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    });
    println!("held {} of {count}", held.len());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn load(target: SocketAddr, duration: Duration, connections: usize, new_connections: bool) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
                let mut errors = 0u64;
                let mut kept: Option<BufReader<TcpStream>> = None;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let result = if new_connections {
                        connect(target).and_then(|mut s| request(&mut s, true))
                    } else {
                        let stream = match kept.take() {
                            Some(s) => Ok(s),
                            None => connect(target),
                        };
                        stream.and_then(|mut s| {
                            let body = request(&mut s, false)?;
                            kept = Some(s);
                            Ok(body)
                        })
                    };
                    match result {
                        Ok(_) => latencies.push(t0.elapsed().as_micros() as u32),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.join().unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    println!(
        "requests={} rps={:.0} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3} errors={errors}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
    );
}
