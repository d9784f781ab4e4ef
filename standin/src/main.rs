//! `invoiceme-standin [--listen ADDR] [--version VERSION]`: the stand-in InvoiceMe app as a process.
//! `invoiceme-standin --healthcheck URL`: a one-shot probe for a Docker `HEALTHCHECK` in a `FROM scratch`
//! image, which has no shell and no curl.
//! Arguments are parsed by hand to keep the static binary small.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::process::ExitCode;
use std::time::Duration;

use deploybot_standin::{serve, StandinConfig};
use tokio::net::TcpListener;

const USAGE: &str = "usage: invoiceme-standin [--listen 127.0.0.1:8080] [--version v1.0.0]

  --listen ADDR      address to listen on (env STANDIN_LISTEN, default 127.0.0.1:8080)
  --version VERSION  version the app reports; suffixes -broken -slow -errors -html -crash -hog -dbpool
                     select misbehaviour (env APP_VERSION, default v1.0.0)
  --healthcheck URL  GET an http:// URL once and exit 0 on a 2xx answer, 1 otherwise (for HEALTHCHECK)

environment: STANDIN_PASSWORD (extra accepted password), STANDIN_SLOW_MS (default 1500),
             STANDIN_ERROR_RATE (default 0.2)";

#[derive(Debug, Default, PartialEq)]
struct Args {
    listen: Option<String>,
    version: Option<String>,
    healthcheck: Option<String>,
    help: bool,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => {
                parsed.help = true;
                continue;
            }
            "--listen" => &mut parsed.listen,
            "--version" => &mut parsed.version,
            "--healthcheck" => &mut parsed.healthcheck,
            _ => return Err(format!("unknown argument {arg:?}")),
        };
        let value = match inline.or_else(|| args.next()) {
            Some(value) if !value.is_empty() => value,
            _ => return Err(format!("{flag} needs a value")),
        };
        *slot = Some(value);
    }
    Ok(parsed)
}

fn env_or(value: Option<String>, var: &str, default: &str) -> String {
    value
        .or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("invoiceme-standin: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if let Some(url) = args.healthcheck {
        return match healthcheck(&url) {
            Ok(status) => {
                println!("{url}: {status}");
                ExitCode::from(if (200..300).contains(&status) { 0 } else { 1 })
            }
            Err(message) => {
                eprintln!("invoiceme-standin: healthcheck {url}: {message}");
                ExitCode::from(1)
            }
        };
    }
    let listen = env_or(args.listen, "STANDIN_LISTEN", "127.0.0.1:8080");
    let version = env_or(args.version, "APP_VERSION", "v1.0.0");
    let mut config = match StandinConfig::from_env(version) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("invoiceme-standin: {message}");
            return ExitCode::from(2);
        }
    };
    config.log_requests = true;

    let listener = match TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("invoiceme-standin: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener
        .local_addr()
        .map_or(listen, |addr| addr.to_string());
    let behaviour = config.behaviour();
    let misbehaving = behaviour.names();
    if misbehaving.is_empty() {
        println!("invoiceme-standin {} listening on {local}", config.version);
    } else {
        println!(
            "invoiceme-standin {} listening on {local} (misbehaving: {})",
            config.version,
            misbehaving.join(", ")
        );
    }
    let _ = std::io::stdout().flush();

    if behaviour.crash {
        eprintln!(
            "ERROR 1 --- [main] o.s.boot.SpringApplication : Application run failed\n\
             org.springframework.beans.factory.BeanCreationException: Error creating bean with name 'entityManagerFactory': \
             Unable to open JDBC Connection for DDL execution [Connection to db:5432 refused]"
        );
        return ExitCode::from(3);
    }

    match serve(listener, config, shutdown_signal()).await {
        Ok(()) => {
            println!("invoiceme-standin stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("invoiceme-standin: server error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// One `GET` over plain HTTP/1.0; returns the status code. Blocking std I/O: this runs instead of the server.
fn healthcheck(url: &str) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("bad address {authority:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority:?} resolves to nothing"))?;
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 256 {
        match stream.read(&mut buf).map_err(|e| e.to_string())? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

/// Completes on SIGTERM (what `docker stop` sends, and PID 1 in a scratch image gets no default handler)
/// or on ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    let name = tokio::select! {
        () = ctrl_c => "interrupt",
        () = terminate => "SIGTERM",
    };
    println!("invoiceme-standin received {name}, shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn flags_take_a_separate_or_inline_value() {
        let args = parse(&["--listen", "0.0.0.0:9000", "--version=v2.0.0-slow"]).unwrap();
        assert_eq!(args.listen.as_deref(), Some("0.0.0.0:9000"));
        assert_eq!(args.version.as_deref(), Some("v2.0.0-slow"));
        assert_eq!(parse(&[]).unwrap(), Args::default());
        assert!(parse(&["--help"]).unwrap().help);
    }

    #[test]
    fn the_healthcheck_reports_the_status_code_of_its_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/api/actuator/health",
            listener.local_addr().unwrap()
        );
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 256];
            let mut n = 0;
            while !request[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < request.len() {
                n += conn.read(&mut request[n..]).unwrap();
            }
            conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        assert_eq!(healthcheck(&url), Ok(503));
        assert!(server
            .join()
            .unwrap()
            .starts_with("GET /api/actuator/health HTTP/1.0\r\n"));
        assert!(healthcheck("https://example.com/").is_err());
        assert_eq!(
            parse(&["--healthcheck", &url])
                .unwrap()
                .healthcheck
                .as_deref(),
            Some(url.as_str())
        );
    }

    #[test]
    fn unknown_flags_and_missing_values_are_errors() {
        assert_eq!(
            parse(&["--port", "1"]).unwrap_err(),
            "unknown argument \"--port\""
        );
        assert_eq!(parse(&["--listen"]).unwrap_err(), "--listen needs a value");
        assert_eq!(
            parse(&["--version="]).unwrap_err(),
            "--version needs a value"
        );
    }
}
