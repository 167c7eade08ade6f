//! Who may do what: the admin secret and password, API keys and tokens for
//! the CLI, browser sessions with CSRF tokens, and the login rate limit.
//!
//! - **Bearer** (`Authorization: Bearer …`): the console admin token (when no
//!   `[admin]` credential is provisioned), an `[admin] api_keys` key, or an
//!   API token made through `/api/v1/tokens`. No CSRF token needed: a
//!   browser never adds this header by itself.
//! - **Session cookie** (`nuvol_session`, HttpOnly, SameSite=Strict, Secure
//!   on HTTPS): made by `POST /login` with the admin password
//!   (`[admin] password_hash`, argon2) or, without one, the console admin
//!   token. Every state-changing request authenticated by cookie must carry
//!   the session's CSRF token (`X-CSRF-Token` header or `csrf=` in the
//!   query string, which the panel's forms put in their action URL).
//!
//! Secrets are never stored: API tokens and sessions are kept as SHA-256
//! hashes, passwords as argon2 PHC strings.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the session cookie.
pub const COOKIE: &str = "nuvol_session";
/// Most live sessions; the least recently used is dropped beyond this.
pub const MAX_SESSIONS: usize = 64;
/// A session unused this long is gone.
pub const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// A session older than this is gone, used or not.
pub const SESSION_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most API tokens kept.
pub const MAX_TOKENS: usize = 64;
/// Failed logins allowed per address per [`LOGIN_WINDOW`].
pub const LOGIN_FAILURES: u32 = 5;
/// Window of the login rate limit (and the lockout after it trips).
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Most addresses tracked by the login rate limit.
pub const MAX_LIMITED_IPS: usize = 1024;
/// File (under the state directory) with the API tokens' hashes.
pub const TOKENS_FILE: &str = "api-tokens.json";
/// The format of the token entries this agent writes.
///
/// The file stays a bare JSON array of tokens, each with its `format`:
/// agents before formats read exactly an array (anything else left them
/// with no tokens, and the next token made replaced the file), so after a
/// rollback to one of them the tokens must still be an array. They skip
/// fields they do not know in an entry, so the number sits there.
pub const TOKENS_FORMAT: u32 = 1;
/// Largest token file read (64 tokens take about 10 KiB).
const TOKENS_FILE_MAX: u64 = 1 << 20;

/// Errors of the token store.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("at most {MAX_TOKENS} API tokens; revoke one first")]
    TooManyTokens,
    #[error("token name must be 1-64 printable characters")]
    BadName,
    #[error("no such token: {0}")]
    NoSuchToken(String),
    #[error("no random numbers: {0}")]
    Random(String),
}

impl AuthError {
    /// Stable machine code for the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Io { .. } => "io_error",
            AuthError::TooManyTokens => "too_many_tokens",
            AuthError::BadName => "bad_name",
            AuthError::NoSuchToken(_) => "unknown_token",
            AuthError::Random(_) => "internal",
        }
    }
}

/// `[admin]` as the API needs it.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// argon2 PHC string of the admin password.
    pub password_hash: Option<String>,
    /// Provisioned API keys: `sha256:<hex>` or argon2 PHC strings.
    pub api_keys: Vec<String>,
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A bearer credential (admin token, API key or API token).
    Bearer,
    /// A browser session; its CSRF token must accompany state changes.
    Session { csrf: String },
}

/// One API token in the file: a newer agent's fields and format are
/// kept when this one rewrites the file.
type StoredToken = nuvol_durable::json::Entry<TokenInfo>;

/// One API token as listed (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    /// Unix seconds.
    pub created: u64,
    /// SHA-256 of the whole token, hex.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub hash: String,
}

struct Session {
    csrf: String,
    created: Instant,
    last: Instant,
}

#[derive(Default)]
struct Limit {
    failures: u32,
    since: Option<Instant>,
}

/// Why a login was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Too many failures from this address; try again after this long.
    RateLimited(Duration),
    /// Wrong secret.
    Wrong,
    /// Nothing to log in with (no password and no admin token).
    Closed,
}

/// The authentication state of one agent.
pub struct Auth {
    /// The console token while no admin credential is set.
    admin_token: Mutex<Option<String>>,
    /// The admin password's hash (`[admin] password_hash`, or set live
    /// through the settings API).
    password_hash: Mutex<Option<String>>,
    settings: AdminSettings,
    tokens_path: Option<PathBuf>,
    /// As in the file: each with its format and a newer agent's fields.
    tokens: Mutex<Vec<StoredToken>>,
    /// SHA-256 of API keys already verified against an argon2 entry.
    key_cache: Mutex<Vec<[u8; 32]>>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    limits: Mutex<HashMap<IpAddr, Limit>>,
}

/// 32 random bytes as 64 hex digits.
pub fn random_hex() -> Result<String, AuthError> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(hex(&b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Constant-time equality of two byte strings (length may leak).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verify `secret` against an argon2 PHC string. Refuses hashes asking for
/// more than 256 MiB so a bad config cannot exhaust a 2 GB box.
pub fn argon2_verify(phc: &str, secret: &str) -> bool {
    use argon2::PasswordVerifier;
    let m_ok = phc
        .split('$')
        .flat_map(|p| p.split(','))
        .find_map(|kv| kv.strip_prefix("m="))
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m <= 256 * 1024);
    m_ok && argon2::Argon2::default()
        .verify_password(secret.as_bytes(), phc)
        .is_ok()
}

/// Hash a password for `[admin] password_hash` (argon2id, default params).
pub fn argon2_hash(password: &str) -> Result<String, String> {
    use argon2::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

impl Auth {
    /// `admin_token`: the console secret, used only when `[admin]` sets no
    /// password and no API key. `state_dir`: where API tokens are kept
    /// (`None`: tokens live in memory only).
    pub fn new(
        admin_token: Option<String>,
        settings: AdminSettings,
        state_dir: Option<&Path>,
    ) -> Auth {
        let provisioned = settings.password_hash.is_some() || !settings.api_keys.is_empty();
        let tokens_path = state_dir.map(|d| d.join(TOKENS_FILE));
        let tokens = tokens_path.as_deref().map(load_tokens).unwrap_or_default();
        Auth {
            admin_token: Mutex::new(if provisioned { None } else { admin_token }),
            password_hash: Mutex::new(settings.password_hash.clone()),
            settings,
            tokens_path,
            tokens: Mutex::new(tokens),
            key_cache: Mutex::new(Vec::new()),
            sessions: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the console admin token is a valid credential.
    pub fn admin_token_active(&self) -> bool {
        lock(&self.admin_token).is_some()
    }

    /// Whether an admin password is set.
    pub fn password_set(&self) -> bool {
        lock(&self.password_hash).is_some()
    }

    /// A new admin password (hash) is in force: logins need it, the console
    /// token stops working (as with `[admin] password_hash`), and every
    /// session but `keep` (the one that changed it) ends.
    pub fn set_password_hash(&self, phc: String, keep: Option<&str>) {
        *lock(&self.password_hash) = Some(phc);
        *lock(&self.admin_token) = None;
        let keep = keep.map(sha);
        lock(&self.sessions).retain(|k, _| Some(*k) == keep);
    }

    /// Check a bearer credential.
    pub fn check_bearer(&self, got: &str) -> bool {
        if got.is_empty() || got.len() > 512 {
            return false;
        }
        if let Some(t) = lock(&self.admin_token).as_deref() {
            if ct_eq(got.as_bytes(), t.as_bytes()) {
                return true;
            }
        }
        let h = sha(got);
        if let Some(rest) = got.strip_prefix("nvt.") {
            let id = rest.split('.').next().unwrap_or("");
            let tokens = lock(&self.tokens);
            if let Some(t) = tokens.iter().find(|t| t.value.id == id) {
                return ct_eq(t.value.hash.as_bytes(), hex(&h).as_bytes());
            }
            return false;
        }
        for k in &self.settings.api_keys {
            if let Some(want) = k.strip_prefix("sha256:") {
                if ct_eq(want.to_ascii_lowercase().as_bytes(), hex(&h).as_bytes()) {
                    return true;
                }
            }
        }
        lock(&self.key_cache).iter().any(|c| ct_eq(c, &h))
    }

    /// Whether `[admin] api_keys` holds argon2 entries, which
    /// [`Auth::check_bearer`] does not try (they are slow: see
    /// [`Auth::check_slow_key`]).
    pub fn has_slow_keys(&self) -> bool {
        self.settings
            .api_keys
            .iter()
            .any(|k| k.starts_with("$argon2"))
    }

    /// Try `got` against the argon2 API keys, rate-limited per address like
    /// logins (run it off the async runtime: it takes ~100 ms and 19 MiB).
    /// A match is cached (as SHA-256) so the next request is fast.
    pub fn check_slow_key(&self, ip: IpAddr, got: &str) -> bool {
        if got.is_empty() || got.len() > 512 || self.limited(ip, Instant::now()).is_some() {
            return false;
        }
        for k in &self.settings.api_keys {
            if k.starts_with("$argon2") && argon2_verify(k, got) {
                let mut c = lock(&self.key_cache);
                if c.len() < 16 {
                    c.push(sha(got));
                }
                return true;
            }
        }
        self.note_failure(ip, Instant::now());
        false
    }

    fn limited(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let l = lock(&self.limits);
        let x = l.get(&ip)?;
        let age = now.duration_since(x.since?);
        (x.failures >= LOGIN_FAILURES && age < LOGIN_WINDOW).then(|| LOGIN_WINDOW - age)
    }

    /// Who is asking: bearer header first, then the session cookie.
    pub fn authenticate(&self, headers: &hyper::HeaderMap) -> Option<Principal> {
        if let Some(b) = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return self.check_bearer(b.trim()).then_some(Principal::Bearer);
        }
        let id = session_cookie(headers)?;
        self.session(&id).map(|csrf| Principal::Session { csrf })
    }

    /// The CSRF token of a live session (touching it), or `None`.
    pub fn session(&self, id: &str) -> Option<String> {
        if id.len() != 64 {
            return None;
        }
        let key = sha(id);
        let now = Instant::now();
        let mut s = lock(&self.sessions);
        let live = s.get(&key).is_some_and(|x| {
            now.duration_since(x.last) < SESSION_IDLE
                && now.duration_since(x.created) < SESSION_MAX_AGE
        });
        if !live {
            s.remove(&key);
            return None;
        }
        let x = s.get_mut(&key)?;
        x.last = now;
        Some(x.csrf.clone())
    }

    /// Log in from `ip` with `secret`: a new session id and its CSRF token.
    pub fn login(&self, ip: IpAddr, secret: &str) -> Result<(String, String), LoginError> {
        self.verify_secret(ip, secret)?;
        self.new_session().map_err(|_| LoginError::Closed)
    }

    /// Check the login secret (the admin password, or without one the
    /// console token) from `ip`, rate-limited like logins. Slow with a
    /// password (argon2): run it off the async runtime.
    pub fn verify_secret(&self, ip: IpAddr, secret: &str) -> Result<(), LoginError> {
        let now = Instant::now();
        if let Some(wait) = self.limited(ip, now) {
            return Err(LoginError::RateLimited(wait));
        }
        let hash = lock(&self.password_hash).clone();
        let token = lock(&self.admin_token).clone();
        let ok = match (hash, token) {
            (Some(h), _) => secret.len() <= 1024 && argon2_verify(&h, secret),
            (None, Some(t)) => ct_eq(secret.trim().as_bytes(), t.as_bytes()),
            (None, None) => return Err(LoginError::Closed),
        };
        if !ok {
            self.note_failure(ip, now);
            return Err(LoginError::Wrong);
        }
        lock(&self.limits).remove(&ip);
        Ok(())
    }

    /// Make a session (after the caller checked a credential).
    pub fn new_session(&self) -> Result<(String, String), AuthError> {
        let now = Instant::now();
        let (id, csrf) = (random_hex()?, random_hex()?);
        let mut s = lock(&self.sessions);
        s.retain(|_, x| {
            now.duration_since(x.last) < SESSION_IDLE
                && now.duration_since(x.created) < SESSION_MAX_AGE
        });
        while s.len() >= MAX_SESSIONS {
            let oldest = s.iter().min_by_key(|(_, x)| x.last).map(|(k, _)| *k);
            match oldest {
                Some(k) => s.remove(&k),
                None => break,
            };
        }
        s.insert(
            sha(&id),
            Session {
                csrf: csrf.clone(),
                created: now,
                last: now,
            },
        );
        Ok((id, csrf))
    }

    fn note_failure(&self, ip: IpAddr, now: Instant) {
        let mut l = lock(&self.limits);
        if l.len() >= MAX_LIMITED_IPS && !l.contains_key(&ip) {
            l.retain(|_, x| {
                x.since
                    .is_some_and(|s| now.duration_since(s) < LOGIN_WINDOW)
            });
            if l.len() >= MAX_LIMITED_IPS {
                let oldest = l.iter().min_by_key(|(_, x)| x.since).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    l.remove(&k);
                }
            }
        }
        let x = l.entry(ip).or_default();
        if x.since
            .is_none_or(|s| now.duration_since(s) >= LOGIN_WINDOW)
        {
            x.since = Some(now);
            x.failures = 0;
        }
        x.failures = x.failures.saturating_add(1);
    }

    /// End a session.
    pub fn logout(&self, id: &str) {
        lock(&self.sessions).remove(&sha(id));
    }

    /// Number of live sessions (metrics).
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// API tokens, without their hashes.
    pub fn list_tokens(&self) -> Vec<TokenInfo> {
        lock(&self.tokens)
            .iter()
            .map(|t| TokenInfo {
                hash: String::new(),
                ..t.value.clone()
            })
            .collect()
    }

    /// Make an API token named `name`. The secret is returned once.
    pub fn create_token(&self, name: &str) -> Result<(TokenInfo, String), AuthError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(AuthError::BadName);
        }
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= MAX_TOKENS {
            return Err(AuthError::TooManyTokens);
        }
        let id = random_hex()?[..12].to_string();
        let secret = format!("nvt.{id}.{}", &random_hex()?[..48]);
        let info = TokenInfo {
            id,
            name: name.to_string(),
            created: now_unix(),
            hash: hex(&sha(&secret)),
        };
        let mut next = tokens.clone();
        next.push(StoredToken::new(TOKENS_FORMAT, info.clone()));
        self.save(&next)?;
        *tokens = next;
        Ok((
            TokenInfo {
                hash: String::new(),
                ..info
            },
            secret,
        ))
    }

    /// Revoke the API token `id`.
    pub fn revoke_token(&self, id: &str) -> Result<(), AuthError> {
        let mut tokens = lock(&self.tokens);
        let next: Vec<StoredToken> = tokens
            .iter()
            .filter(|t| t.value.id != id)
            .cloned()
            .collect();
        if next.len() == tokens.len() {
            return Err(AuthError::NoSuchToken(id.to_string()));
        }
        self.save(&next)?;
        *tokens = next;
        Ok(())
    }

    fn save(&self, tokens: &[StoredToken]) -> Result<(), AuthError> {
        let Some(path) = &self.tokens_path else {
            return Ok(());
        };
        nuvol_durable::json::write(path, tokens, nuvol_durable::Mode::Private).map_err(|source| {
            AuthError::Io {
                path: path.display().to_string(),
                source,
            }
        })
    }
}

/// The tokens in `path`: none without the file. One that cannot be read is
/// moved aside (`api-tokens.json.bad`, logged) rather than replaced by the
/// next token made. All are kept, even beyond [`MAX_TOKENS`] (a newer
/// agent may allow more): the limit only stops new ones.
fn load_tokens(path: &Path) -> Vec<StoredToken> {
    match nuvol_durable::json::read(path, TOKENS_FILE_MAX) {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => {
            tracing::error!("API tokens: {e}; starting without tokens");
            Vec::new()
        }
    }
}

/// The session id in the request's cookie, if any.
pub fn session_cookie(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .take(8)
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| crate::parse::cookie(v, COOKIE).map(str::to_string))
}

/// The `Set-Cookie` value for a new session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends the session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether a cookie-authenticated state change carries the session's CSRF
/// token in `X-CSRF-Token` or the `csrf` query parameter.
pub fn csrf_ok(want: &str, headers: &hyper::HeaderMap, query: &str) -> bool {
    let got = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| crate::parse::form_get(query, "csrf"));
    got.is_some_and(|g| ct_eq(g.as_bytes(), want.as_bytes()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn admin_token_logs_in_and_rate_limit_trips() {
        let a = Auth::new(Some("t".repeat(64)), AdminSettings::default(), None);
        assert!(a.check_bearer(&"t".repeat(64)));
        assert!(!a.check_bearer(&"u".repeat(64)));
        for _ in 0..LOGIN_FAILURES {
            assert_eq!(a.login(ip(1), "wrong"), Err(LoginError::Wrong));
        }
        // Even the right secret is refused while locked out...
        assert!(matches!(
            a.login(ip(1), &"t".repeat(64)),
            Err(LoginError::RateLimited(_))
        ));
        // ...but other addresses are not affected.
        let (id, csrf) = a.login(ip(2), &"t".repeat(64)).unwrap();
        assert_eq!(a.session(&id), Some(csrf));
        a.logout(&id);
        assert_eq!(a.session(&id), None);
    }

    #[test]
    fn sessions_are_bounded() {
        let a = Auth::new(Some("s".repeat(64)), AdminSettings::default(), None);
        let first = a.login(ip(3), &"s".repeat(64)).unwrap().0;
        for _ in 0..MAX_SESSIONS {
            a.login(ip(3), &"s".repeat(64)).unwrap();
        }
        assert_eq!(a.session_count(), MAX_SESSIONS);
        assert_eq!(a.session(&first), None, "the oldest session was dropped");
    }

    #[test]
    fn password_replaces_the_console_token() {
        let h = argon2_hash("correct horse").unwrap();
        let a = Auth::new(
            Some("t".repeat(64)),
            AdminSettings {
                password_hash: Some(h),
                api_keys: vec![format!("sha256:{}", hex(&sha("key-1")))],
            },
            None,
        );
        assert!(!a.admin_token_active());
        assert!(!a.check_bearer(&"t".repeat(64)));
        assert!(a.check_bearer("key-1"));
        assert_eq!(a.login(ip(4), &"t".repeat(64)), Err(LoginError::Wrong));
        assert!(a.login(ip(4), "correct horse").is_ok());
    }

    #[test]
    fn password_set_live_ends_the_token_and_other_sessions() {
        let a = Auth::new(Some("t".repeat(64)), AdminSettings::default(), None);
        let (mine, _) = a.login(ip(5), &"t".repeat(64)).unwrap();
        let (other, _) = a.login(ip(5), &"t".repeat(64)).unwrap();
        assert_eq!(a.verify_secret(ip(5), "nope"), Err(LoginError::Wrong));
        a.set_password_hash(argon2_hash("a new password").unwrap(), Some(&mine));
        assert!(a.password_set() && !a.admin_token_active());
        assert!(!a.check_bearer(&"t".repeat(64)));
        assert!(a.session(&mine).is_some() && a.session(&other).is_none());
        assert_eq!(a.login(ip(5), &"t".repeat(64)), Err(LoginError::Wrong));
        assert!(a.login(ip(5), "a new password").is_ok());
    }

    #[test]
    fn argon2_api_key_and_memory_cap() {
        let h = argon2_hash("k2").unwrap();
        let a = Auth::new(
            None,
            AdminSettings {
                password_hash: None,
                api_keys: vec![h.clone()],
            },
            None,
        );
        assert!(a.has_slow_keys());
        assert!(
            !a.check_bearer("k2"),
            "argon2 keys are not tried on the fast path"
        );
        assert!(a.check_slow_key(ip(9), "k2"));
        assert!(a.check_bearer("k2"), "then the fast path knows it");
        for _ in 0..LOGIN_FAILURES {
            assert!(!a.check_slow_key(ip(8), "k3"));
        }
        assert!(!a.check_slow_key(ip(8), "k2"), "rate-limited like logins");
        let huge = h.replace("m=19456", "m=4194304");
        assert!(!argon2_verify(&huge, "k2"));
    }

    #[test]
    fn tokens_persist_hashed_and_revoke() {
        let dir = std::env::temp_dir().join(format!("nuvol-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Auth::new(None, AdminSettings::default(), Some(&dir));
        let (info, secret) = a.create_token("laptop").unwrap();
        assert!(a.check_bearer(&secret));
        let file = std::fs::read_to_string(dir.join(TOKENS_FILE)).unwrap();
        assert!(!file.contains(&secret) && file.contains("laptop"));
        let b = Auth::new(None, AdminSettings::default(), Some(&dir));
        assert!(b.check_bearer(&secret), "tokens survive a restart");
        assert_eq!(b.list_tokens()[0].hash, "");
        b.revoke_token(&info.id).unwrap();
        assert!(!b.check_bearer(&secret));
        assert!(b.revoke_token(&info.id).is_err());
        assert!(matches!(b.create_token(" "), Err(AuthError::BadName)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn token_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nuvol-auth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const SECRET_A: &str = "nvt.aaaaaaaaaaaa.0123";
    const SECRET_B: &str = "nvt.bbbbbbbbbbbb.4567";

    #[test]
    fn tokens_of_older_and_newer_agents_are_read_and_kept() {
        let dir = token_dir("formats");
        let path = dir.join(TOKENS_FILE);
        // Update: an older agent's file, a bare array without formats.
        let file = serde_json::json!([
            {"id": "aaaaaaaaaaaa", "name": "laptop", "created": 1, "hash": hex(&sha(SECRET_A))}
        ]);
        std::fs::write(&path, file.to_string()).unwrap();
        let a = Auth::new(None, AdminSettings::default(), Some(&dir));
        assert!(a.check_bearer(SECRET_A));
        assert_eq!(a.list_tokens()[0].name, "laptop");
        // Rollback: a newer agent's entry (format 2, a field this agent
        // does not know) works and survives this agent's rewrite.
        let file = serde_json::json!([
            {"id": "aaaaaaaaaaaa", "name": "laptop", "created": 1, "hash": hex(&sha(SECRET_A))},
            {"format": 2, "id": "bbbbbbbbbbbb", "name": "ci", "created": 2,
             "hash": hex(&sha(SECRET_B)), "scopes": ["read"]}
        ]);
        std::fs::write(&path, file.to_string()).unwrap();
        let b = Auth::new(None, AdminSettings::default(), Some(&dir));
        assert!(b.check_bearer(SECRET_A) && b.check_bearer(SECRET_B));
        let (made, _) = b.create_token("new").unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let list = raw.as_array().expect("still a bare array");
        assert_eq!(list.len(), 3);
        assert_eq!(list[0]["format"], 1);
        assert_eq!(list[1]["format"], 2);
        assert_eq!(list[1]["scopes"], serde_json::json!(["read"]));
        assert_eq!(list[1]["name"], "ci");
        assert_eq!(list[2]["format"], TOKENS_FORMAT);
        assert_eq!(list[2]["id"], made.id.as_str());
        // The API shows neither the format nor a newer agent's fields.
        let shown = serde_json::to_value(b.list_tokens()).unwrap();
        assert_eq!(
            shown[1],
            serde_json::json!({"id": "bbbbbbbbbbbb", "name": "ci", "created": 2})
        );
        // What the agents before formats read (`Vec<TokenInfo>`) is intact.
        let old: Vec<TokenInfo> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(old.len(), 3);
        assert_eq!(
            (old[1].id.as_str(), old[1].hash.as_str()),
            ("bbbbbbbbbbbb", hex(&sha(SECRET_B)).as_str())
        );
        b.revoke_token(&made.id).unwrap();
        let c = Auth::new(None, AdminSettings::default(), Some(&dir));
        assert!(c.check_bearer(SECRET_A) && c.check_bearer(SECRET_B));
        assert_eq!(c.list_tokens().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreadable_token_file_is_kept_aside_not_replaced() {
        let dir = token_dir("bad");
        let path = dir.join(TOKENS_FILE);
        std::fs::write(&path, b"[{\"id\": \"aaaaaaaaaaaa\", ").unwrap();
        let a = Auth::new(None, AdminSettings::default(), Some(&dir));
        assert!(a.list_tokens().is_empty());
        let (_, secret) = a.create_token("new").unwrap();
        assert_eq!(
            std::fs::read(dir.join("api-tokens.json.bad")).unwrap(),
            b"[{\"id\": \"aaaaaaaaaaaa\", "
        );
        let b = Auth::new(None, AdminSettings::default(), Some(&dir));
        assert!(b.check_bearer(&secret));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
