//! `nuvol ctl`: drive a box's API from a shell.
//!
//! Credentials: `--token`, else `NUVOL_TOKEN`, else the first line of
//! `--token-file` (default `$HOME/.config/nuvol/token`). HTTPS boxes are
//! trusted by their certificate's SHA-256 fingerprint (`--fingerprint` or
//! `NUVOL_FINGERPRINT`; the box prints it on the console).
//!
//! Exit codes: 0 ok, 1 the box answered with an error, 2 usage, 3 cannot
//! connect or not authorised.

use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The box: http://HOST[:PORT] or https://HOST[:PORT] (else NUVOL_HOST,
    /// else http://127.0.0.1).
    #[arg(long)]
    host: Option<String>,
    /// API token or key (else NUVOL_TOKEN, else --token-file).
    #[arg(long)]
    token: Option<String>,
    /// File holding the token (first line).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the box's HTTPS certificate (else
    /// NUVOL_FINGERPRINT).
    #[arg(long)]
    fingerprint: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: CtlCmd,
}

#[derive(Subcommand, Debug)]
enum CtlCmd {
    /// Health of the box: version, uptime, memory, disks.
    Status,
    /// Members of the community (role, zone, state, RTT).
    Members,
    /// Services announced in the community, nearest first.
    Services {
        /// Only this service type.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only services near this box.
        #[arg(long)]
        near: bool,
        /// Only this zone.
        #[arg(long)]
        zone: Option<String>,
    },
    /// Services running on this box.
    LocalServices,
    /// Signed bundles: list, install, remove.
    #[command(subcommand)]
    Bundles(BundlesCmd),
    /// Logs of a service on this box.
    Logs {
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Lines of history first.
        #[arg(long, default_value_t = 100)]
        lines: u32,
        name: String,
    },
    /// Reboot the box.
    Reboot,
    /// Update the box's OS (not available yet).
    Update,
    /// Hash a password (read from stdin) for `[admin] password_hash`.
    HashPassword,
    /// The box's settings (value and source); `settings set KEY=VALUE…`
    /// changes them.
    Settings {
        #[command(subcommand)]
        cmd: Option<SettingsCmd>,
    },
}

#[derive(Subcommand, Debug)]
enum SettingsCmd {
    /// Change settings: `KEY=VALUE` (a value of `-` is read from stdin,
    /// e.g. `admin.password=-`), `KEY=` for an empty value.
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// The current admin password (or admin token), needed to change
        /// admin.password; `-` reads it from stdin.
        #[arg(long)]
        current: Option<String>,
    },
    /// Drop settings made here: nuvol.toml's value (or the default) is in
    /// force again.
    Reset {
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BundlesCmd {
    /// Installed bundles.
    List,
    /// Bundles other boxes of the community offer (node, version,
    /// publisher, whether this box trusts the publisher's key).
    Available {
        /// Ask every provider again instead of using answers up to 60 s old.
        #[arg(long)]
        refresh: bool,
    },
    /// Upload a bundle file (the box verifies its signature, then installs),
    /// or with --from NODE fetch the bundle NAME that node offers: the box
    /// downloads and verifies it against its own keys, shows publisher and
    /// signature, and installs after you confirm.
    Install {
        /// The bundle file; with --from, the bundle's name.
        #[arg(value_name = "FILE|NAME")]
        target: String,
        /// Fetch from this node of the community (see `bundles available`).
        #[arg(long, value_name = "NODE")]
        from: Option<String>,
        /// With --from: install without asking.
        #[arg(short, long)]
        yes: bool,
    },
    /// Remove a bundle (its data is kept unless --purge).
    Remove {
        name: String,
        #[arg(long)]
        purge: bool,
    },
}

/// Exit codes.
const BOX_ERROR: i32 = 1;
const CANNOT: i32 = 3;

struct Fail(i32, String);

pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    if let CtlCmd::HashPassword = args.cmd {
        let mut pw = String::new();
        std::io::stdin().read_line(&mut pw)?;
        let pw = pw.trim_end_matches(['\r', '\n']);
        if pw.is_empty() {
            eprintln!("nuvol ctl: give the password on stdin");
            std::process::exit(2);
        }
        match nuvol_api::auth::argon2_hash(pw) {
            Ok(h) => println!("{h}"),
            Err(e) => anyhow::bail!("hashing: {e}"),
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(main(args)) {
        Ok(()) => Ok(()),
        Err(Fail(code, msg)) => {
            eprintln!("nuvol ctl: {msg}");
            std::process::exit(code)
        }
    }
}

fn token(args: &CtlArgs) -> Option<String> {
    if let Some(t) = &args.token {
        return Some(t.clone());
    }
    if let Ok(t) = std::env::var("NUVOL_TOKEN") {
        if !t.is_empty() {
            return Some(t);
        }
    }
    let path = args.token_file.clone().or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/nuvol/token"))
    })?;
    let s = std::fs::read_to_string(path).ok()?;
    s.lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

struct Client {
    https: bool,
    host: String,
    port: u16,
    authority: String,
    token: Option<String>,
    tls: Option<Arc<nuvol_api::rustls::ClientConfig>>,
}

/// A request body: nothing, a small JSON document, or a file streamed
/// with progress.
enum Payload {
    Empty,
    Json(Option<Bytes>),
    File(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
}

impl hyper::body::Body for Payload {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Payload::Empty => Poll::Ready(None),
            Payload::Json(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Payload::File(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }
}

impl Client {
    fn new(args: &CtlArgs) -> Result<Client, Fail> {
        let host_arg = args
            .host
            .clone()
            .or_else(|| std::env::var("NUVOL_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "http://127.0.0.1".into());
        let uri: hyper::Uri = host_arg
            .parse()
            .map_err(|e| Fail(2, format!("--host {host_arg:?}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(Fail(2, "--host must start with http:// or https://".into())),
        };
        let host = uri
            .host()
            .ok_or_else(|| Fail(2, "--host has no host name".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let fp_env = std::env::var("NUVOL_FINGERPRINT").ok();
            let fp = args.fingerprint.as_deref().or(fp_env.as_deref()).ok_or_else(|| {
                Fail(
                    2,
                    "an https:// box needs --fingerprint (its certificate's SHA-256, shown on the box's console)"
                        .into(),
                )
            })?;
            Some(nuvol_api::tls::pinned_client_config(fp).map_err(|e| Fail(2, e.to_string()))?)
        } else {
            None
        };
        Ok(Client {
            https,
            authority: uri.authority().map_or(host.clone(), |a| a.to_string()),
            host,
            port,
            token: token(args),
            tls,
        })
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Payload,
        len: Option<u64>,
    ) -> Result<hyper::Response<Incoming>, Fail> {
        let cannot = |e: String| {
            Fail(
                CANNOT,
                format!("cannot reach {}:{}: {e}", self.host, self.port),
            )
        };
        let tcp = tokio::time::timeout(
            Duration::from_secs(15),
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| cannot("timed out".into()))?
        .map_err(|e| cannot(e.to_string()))?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(
                hyper::header::USER_AGENT,
                concat!("nuvol-ctl/", env!("CARGO_PKG_VERSION")),
            )
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(n) = len {
            req = req.header(hyper::header::CONTENT_LENGTH, n);
        }
        let req = req.body(body).map_err(|e| Fail(2, e.to_string()))?;
        let resp = if let (true, Some(cfg)) = (self.https, &self.tls) {
            let name = nuvol_api::rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| Fail(2, format!("host name: {e}")))?;
            let tls = nuvol_api::tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| cannot(format!("TLS: {e}")))?;
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| cannot(e.to_string()))?;
            tokio::spawn(conn);
            s.send_request(req).await
        } else {
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| cannot(e.to_string()))?;
            tokio::spawn(conn);
            s.send_request(req).await
        }
        .map_err(|e| cannot(e.to_string()))?;
        let st = resp.status();
        if st == hyper::StatusCode::UNAUTHORIZED || st == hyper::StatusCode::FORBIDDEN {
            let (code, msg) = error_code_text(resp).await;
            // A bundle the box refuses (its key is not trusted) is the box's
            // answer, not a credential problem.
            if matches!(
                code.as_str(),
                "unknown_key" | "revoked_key" | "bad_signature"
            ) {
                return Err(Fail(BOX_ERROR, format!("{st}: {code}: {msg}")));
            }
            let hint = if self.token.is_none() {
                " (no token: use --token, NUVOL_TOKEN or ~/.config/nuvol/token)"
            } else {
                ""
            };
            return Err(Fail(CANNOT, format!("not authorised: {msg}{hint}")));
        }
        if st.is_redirection() {
            let loc = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            return Err(Fail(
                CANNOT,
                format!("the box redirects to {loc}: use --host https://… --fingerprint …"),
            ));
        }
        Ok(resp)
    }

    /// A request whose answer is JSON; box errors become exit code 1.
    async fn json(
        &self,
        method: &str,
        path: &str,
        body: Payload,
        len: Option<u64>,
    ) -> Result<Value, Fail> {
        let resp = self.send(method, path, body, len).await?;
        let ok = resp.status().is_success();
        let st = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Fail(CANNOT, format!("reading the answer: {e}")))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !ok {
            let msg = v["error"]["message"].as_str().unwrap_or("");
            let code = v["error"]["code"].as_str().unwrap_or("error");
            return Err(Fail(BOX_ERROR, format!("{st}: {code}: {msg}")));
        }
        Ok(v)
    }
}

/// `bundles install --from NODE NAME`: fetch into a pending upload (the box
/// verifies it), show what it is, ask, install or discard.
async fn install_from(
    c: &Client,
    json: bool,
    node: &str,
    name: &str,
    yes: bool,
) -> Result<(), Fail> {
    let req = serde_json::json!({ "node": node, "name": name }).to_string();
    let len = req.len() as u64;
    let v = c
        .json(
            "POST",
            "/api/v1/bundles/fetch",
            Payload::Json(Some(Bytes::from(req))),
            Some(len),
        )
        .await?;
    let id = v["pending"].as_str().unwrap_or("").to_string();
    let out = |s: String| {
        if json {
            eprintln!("{s}")
        } else {
            println!("{s}")
        }
    };
    out(format!(
        "{} {} from {node}\n  publisher:      {}\n  key:            {} (trusted on this box)\n  signature:      {}\n  image SHA-256:  {}\n  installed now:  {}",
        cell(&v["name"]),
        cell(&v["version"]),
        cell(&v["publisher"]),
        cell(&v["publisher_key_id"]),
        cell(&v["signature"]),
        cell(&v["digest"]),
        v["installed_version"].as_str().unwrap_or("not installed"),
    ));
    let pending = format!(
        "/api/v1/bundles/pending/{}",
        nuvol_api::parse::percent_encode(&id)
    );
    if !yes {
        eprint!("Install it? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
            let _ = c.json("DELETE", &pending, Payload::Empty, None).await;
            return Err(Fail(
                BOX_ERROR,
                "not installed (not confirmed; --yes skips the question)".into(),
            ));
        }
    }
    let r = c
        .json(
            "POST",
            &format!("{pending}/install"),
            Payload::Empty,
            Some(0),
        )
        .await?;
    print_installed(&r, json);
    Ok(())
}

async fn error_code_text(resp: hyper::Response<Incoming>) -> (String, String) {
    let b = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or("").to_string();
    let msg = v["error"]["message"]
        .as_str()
        .map_or_else(|| String::from_utf8_lossy(&b).into_owned(), str::to_string);
    (code, msg)
}

async fn error_text(resp: hyper::Response<Incoming>) -> String {
    let b = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    v["error"]["message"]
        .as_str()
        .map_or_else(|| String::from_utf8_lossy(&b).into_owned(), str::to_string)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(_) => "{…}".into(),
        x => x.to_string(),
    }
}

/// Print a list of objects as an aligned table (scalar columns only).
fn table(rows: &[Value], prefer: &[&str]) {
    if rows.is_empty() {
        println!("(none)");
        return;
    }
    let mut cols: Vec<String> = prefer
        .iter()
        .filter(|c| rows.iter().any(|r| r.get(**c).is_some()))
        .map(|c| c.to_string())
        .collect();
    if cols.is_empty() {
        for r in rows {
            for (k, v) in r.as_object().into_iter().flatten() {
                if !v.is_object() && cols.len() < 8 && !cols.contains(k) {
                    cols.push(k.clone());
                }
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| cell(&r[c.as_str()])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
                .min(40)
        })
        .collect();
    let line = |vals: Vec<String>| {
        let s: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}", w = *w))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(cols.iter().map(|c| c.to_uppercase()).collect());
    for r in cells {
        line(r);
    }
}

fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o
            .values()
            .find_map(|x| x.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// What an install answered: the JSON, or one line.
fn print_installed(v: &Value, json: bool) {
    if json {
        pretty(v)
    } else {
        println!(
            "installed {} {} (publisher {}, key {})",
            cell(&v["name"]),
            cell(&v["version"]),
            cell(&v["publisher"]),
            cell(&v["publisher_key_id"])
        );
    }
}

fn pretty(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn human_bytes(n: u64) -> String {
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < 4 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", ["B", "KiB", "MiB", "GiB", "TiB"][i])
}

async fn main(args: CtlArgs) -> Result<(), Fail> {
    let c = Client::new(&args)?;
    let json = args.json;
    match args.cmd {
        CtlCmd::Status => {
            let v = c
                .json("GET", "/api/v1/status", Payload::Empty, None)
                .await?;
            if json {
                pretty(&v);
            } else {
                let u = v["uptime_s"].as_u64().unwrap_or(0);
                println!("host     {}", cell(&v["hostname"]));
                println!("version  {}", cell(&v["version"]));
                println!("node     {}", cell(&v["node_id"]));
                println!(
                    "uptime   {}d {}h {}m",
                    u / 86400,
                    u % 86400 / 3600,
                    u % 3600 / 60
                );
                println!("load     {}", cell(&v["load"]));
                println!(
                    "memory   {} used of {}",
                    human_bytes(v["memory"]["used_bytes"].as_u64().unwrap_or(0)),
                    human_bytes(v["memory"]["total_bytes"].as_u64().unwrap_or(0))
                );
                for d in v["disks"].as_array().into_iter().flatten() {
                    println!(
                        "disk     {} {} free of {}",
                        cell(&d["mount"]),
                        human_bytes(d["available_bytes"].as_u64().unwrap_or(0)),
                        human_bytes(d["total_bytes"].as_u64().unwrap_or(0))
                    );
                }
                if let Some(p) = v["config"]["problem"].as_str() {
                    println!("PROBLEM  {p}");
                }
            }
        }
        CtlCmd::Members => {
            let v = c
                .json("GET", "/api/v1/members", Payload::Empty, None)
                .await?;
            if json {
                pretty(&v)
            } else {
                table(
                    &list(&v),
                    &[
                        "name", "role", "zone", "state", "status", "health", "hops", "loss",
                        "rtt_ms", "addr", "address",
                    ],
                )
            }
        }
        CtlCmd::Services { kind, near, zone } => {
            let mut q = Vec::new();
            if let Some(k) = kind {
                q.push(format!("type={}", nuvol_api::parse::percent_encode(&k)));
            }
            if near {
                q.push("near=1".into());
            }
            if let Some(z) = zone {
                q.push(format!("zone={}", nuvol_api::parse::percent_encode(&z)));
            }
            let path = if q.is_empty() {
                "/api/v1/services".to_string()
            } else {
                format!("/api/v1/services?{}", q.join("&"))
            };
            let v = c.json("GET", &path, Payload::Empty, None).await?;
            if json {
                pretty(&v)
            } else {
                table(
                    &list(&v),
                    &[
                        "name",
                        "type",
                        "service_type",
                        "node",
                        "zone",
                        "address",
                        "addr",
                        "port",
                        "url",
                        "health",
                        "hops",
                        "loss",
                        "rtt_ms",
                    ],
                )
            }
        }
        CtlCmd::LocalServices => {
            let v = c
                .json("GET", "/api/v1/local-services", Payload::Empty, None)
                .await?;
            if json {
                pretty(&v)
            } else {
                table(
                    &list(&v),
                    &["name", "state", "health", "restarts", "cpu", "memory_bytes"],
                )
            }
        }
        CtlCmd::Bundles(BundlesCmd::List) => {
            let v = c
                .json("GET", "/api/v1/bundles", Payload::Empty, None)
                .await?;
            if json {
                pretty(&v)
            } else {
                table(
                    &list(&v),
                    &["name", "version", "publisher", "publisher_key_id", "state"],
                )
            }
        }
        CtlCmd::Bundles(BundlesCmd::Available { refresh }) => {
            let path = if refresh {
                "/api/v1/community/bundles?refresh=1"
            } else {
                "/api/v1/community/bundles"
            };
            let v = c.json("GET", path, Payload::Empty, None).await?;
            if json {
                pretty(&v)
            } else {
                let rows: Vec<Value> = list(&v["bundles"])
                    .into_iter()
                    .map(|mut r| {
                        r["trusted"] = Value::from(if r["trusted"] == true { "yes" } else { "NO" });
                        r["size"] = Value::from(human_bytes(r["size"].as_u64().unwrap_or(0)));
                        r
                    })
                    .collect();
                if rows.is_empty() {
                    println!("no bundles offered ({} providers)", cell(&v["providers"]));
                } else {
                    table(
                        &rows,
                        &[
                            "node",
                            "name",
                            "version",
                            "publisher",
                            "trusted",
                            "installed_version",
                            "size",
                        ],
                    );
                }
                for e in list(&v["errors"]) {
                    eprintln!("{}: {}", cell(&e["node"]), cell(&e["error"]));
                }
            }
        }
        CtlCmd::Bundles(BundlesCmd::Install {
            target,
            from: Some(node),
            yes,
        }) => install_from(&c, json, &node, &target, yes).await?,
        CtlCmd::Bundles(BundlesCmd::Install { target, .. }) => {
            let (body, len) = upload(std::path::Path::new(&target))?;
            let v = c.json("POST", "/api/v1/bundles", body, Some(len)).await?;
            print_installed(&v, json);
        }
        CtlCmd::Bundles(BundlesCmd::Remove { name, purge }) => {
            let path = format!(
                "/api/v1/bundles/{}{}",
                nuvol_api::parse::percent_encode(&name),
                if purge { "?purge=1" } else { "" }
            );
            let v = c.json("DELETE", &path, Payload::Empty, None).await?;
            if json {
                pretty(&v)
            } else {
                println!(
                    "removed {name}{}",
                    if purge {
                        " and its data"
                    } else {
                        " (data kept)"
                    }
                );
            }
        }
        CtlCmd::Logs {
            follow,
            lines,
            name,
        } => {
            // The box keeps a quiet follow stream open (it is exempt from
            // the idle timer), but a restart of the agent or a network
            // hiccup still ends it: with -f, resume with only new lines
            // until interrupted or the service is gone.
            let mut lines = lines;
            loop {
                let path = format!(
                    "/api/v1/services/{}/logs?lines={lines}{}",
                    nuvol_api::parse::percent_encode(&name),
                    if follow { "&follow=1" } else { "" }
                );
                let resp = c.send("GET", &path, Payload::Empty, None).await?;
                if !resp.status().is_success() {
                    let st = resp.status();
                    return Err(Fail(BOX_ERROR, format!("{st}: {}", error_text(resp).await)));
                }
                let mut body = resp.into_body();
                let mut out = std::io::stdout();
                while let Some(f) = body.frame().await {
                    let Ok(f) = f else { break };
                    if let Ok(d) = f.into_data() {
                        if out.write_all(&d).and_then(|()| out.flush()).is_err() {
                            return Ok(());
                        }
                    }
                }
                if !follow {
                    break;
                }
                lines = 0;
            }
        }
        CtlCmd::Reboot => {
            let v = c
                .json("POST", "/api/v1/system/reboot", Payload::Empty, Some(0))
                .await?;
            if json {
                pretty(&v)
            } else if v["rebooting"] == true {
                println!("the box is rebooting");
            } else {
                println!(
                    "{}",
                    v["message"].as_str().unwrap_or("the box did not reboot")
                );
            }
        }
        CtlCmd::Update => {
            // Ask the box, so the answer stays true when updates land.
            let v = c
                .json("POST", "/api/v1/update", Payload::Empty, Some(0))
                .await?;
            if json {
                pretty(&v)
            } else {
                println!("update started");
            }
        }
        CtlCmd::HashPassword => {}
        CtlCmd::Settings { cmd } => settings(&c, json, cmd).await?,
    }
    Ok(())
}

/// `nuvol ctl settings [set KEY=VALUE… | reset KEY…]`.
async fn settings(c: &Client, json: bool, cmd: Option<SettingsCmd>) -> Result<(), Fail> {
    let body = match cmd {
        None => None,
        Some(SettingsCmd::Set { pairs, current }) => {
            let mut o = serde_json::Map::new();
            let mut stdin = std::io::stdin().lines();
            let mut read = |what: &str| -> Result<String, Fail> {
                match stdin.next() {
                    Some(Ok(l)) => Ok(l.trim_end_matches('\r').to_string()),
                    _ => Err(Fail(2, format!("{what}: nothing on stdin"))),
                }
            };
            for p in pairs {
                let Some((k, v)) = p.split_once('=') else {
                    return Err(Fail(2, format!("{p:?}: want KEY=VALUE")));
                };
                let v = if v == "-" { read(k)? } else { v.to_string() };
                o.insert(k.trim().to_string(), Value::String(v));
            }
            if let Some(cur) = current {
                let cur = if cur == "-" { read("--current")? } else { cur };
                o.insert("current".into(), Value::String(cur));
            }
            Some(Value::Object(o))
        }
        Some(SettingsCmd::Reset { keys }) => Some(Value::Object(
            keys.into_iter().map(|k| (k, Value::Null)).collect(),
        )),
    };
    let v = match body {
        None => {
            c.json("GET", "/api/v1/settings", Payload::Empty, None)
                .await?
        }
        Some(b) => {
            let bytes = Bytes::from(b.to_string());
            let len = bytes.len() as u64;
            c.json(
                "PUT",
                "/api/v1/settings",
                Payload::Json(Some(bytes)),
                Some(len),
            )
            .await?
        }
    };
    if json {
        pretty(&v);
        return Ok(());
    }
    let rows: Vec<Value> = v["settings"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, s)| {
            let value = if k == "admin.password" {
                Value::String(if s["password_set"] == true { "(set)" } else { "(not set)" }.into())
            } else {
                s["value"].clone()
            };
            serde_json::json!({"key": k, "value": value, "source": s["source"], "applies": s["applies"]})
        })
        .collect();
    table(&rows, &["key", "value", "source", "applies"]);
    for w in v["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", cell(w));
    }
    if v.get("restart_needed").is_some() {
        eprintln!("note: the host name applies at the next start of the agent (reboot)");
    }
    Ok(())
}

/// Stream `file` as the body, drawing a progress bar on stderr.
fn upload(file: &std::path::Path) -> Result<(Payload, u64), Fail> {
    let f = std::fs::File::open(file).map_err(|e| Fail(2, format!("{}: {e}", file.display())))?;
    let len = f
        .metadata()
        .map_err(|e| Fail(2, format!("{}: {e}", file.display())))?
        .len();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut f = f;
        let mut sent: u64 = 0;
        let mut last = Instant::now() - Duration::from_secs(1);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    sent += n as u64;
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                    if last.elapsed() >= Duration::from_millis(100) || sent == len {
                        progress(sent, len);
                        last = Instant::now();
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        progress(sent, len);
        eprintln!();
    });
    Ok((Payload::File(rx), len))
}

fn progress(sent: u64, len: u64) {
    let pct = (sent * 100).checked_div(len).unwrap_or(100);
    let filled = (pct / 4) as usize;
    eprint!(
        "\r[{}{}] {pct:>3}% {} / {}",
        "#".repeat(filled),
        ".".repeat(25 - filled.min(25)),
        human_bytes(sent),
        human_bytes(len)
    );
}
