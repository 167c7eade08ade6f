//! The route table: the one list the OpenAPI document is made from and the
//! access rules (public or not) are read from. A test walks it against a
//! running agent: every listed route answers (never `not_found`), every
//! unlisted method on a listed path is refused, and without credentials
//! everything but the public routes is 401.
//!
//! Path parameters are written `{name}` and match one segment. A trailing
//! slash names the same route (`/api/v1/status/` is `/api/v1/status`): the
//! server drops it before anything else looks at the path.

use serde_json::{json, Map, Value};

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct RouteDef {
    pub method: &'static str,
    pub path: &'static str,
    /// Readable without credentials.
    pub public: bool,
    /// Only served when `[debug] test_hooks = true`.
    pub test_hook: bool,
    /// What the response is: `json`, `html`, `text`, `redirect`, `binary`, `stream`
    /// (an endless response: Server-Sent Events, log follow).
    pub kind: &'static str,
    pub summary: &'static str,
}

const fn r(
    method: &'static str,
    path: &'static str,
    public: bool,
    kind: &'static str,
    summary: &'static str,
) -> RouteDef {
    RouteDef {
        method,
        path,
        public,
        test_hook: false,
        kind,
        summary,
    }
}

/// Every route the agent serves (merged areas add their rows here).
pub const ROUTES: &[RouteDef] = &[
    r("GET", "/", true, "html", "Status page (public, read-only)"),
    r("GET", "/login", true, "html", "Login form"),
    r(
        "POST",
        "/login",
        true,
        "redirect",
        "Log in (form: secret, next); sets the session cookie",
    ),
    r("POST", "/logout", false, "redirect", "End the session"),
    r(
        "GET",
        "/panel.js",
        true,
        "text",
        "The panel's optional live-update script",
    ),
    r(
        "GET",
        "/dashboard",
        false,
        "html",
        "Dashboard: health, sparklines, alerts",
    ),
    r(
        "GET",
        "/community",
        false,
        "html",
        "Community: members and services, nearest first",
    ),
    r("GET", "/services", false, "html", "Services on this box"),
    r(
        "GET",
        "/bundles",
        false,
        "html",
        "Bundles: upload, list, roll back, remove",
    ),
    r("GET", "/network", false, "html", "Network page"),
    r(
        "GET",
        "/settings",
        false,
        "html",
        "Settings: zone, role, plain HTTP, host name, admin password, API tokens",
    ),
    r("GET", "/update", false, "html", "Update page: slots A/B"),
    r("GET", "/metrics", false, "text", "Prometheus metrics"),
    r("GET", "/api/v1/openapi.json", true, "json", "This document"),
    r("GET", "/api/v1/status", true, "json", "Node status"),
    r(
        "GET",
        "/api/v1/network",
        true,
        "json",
        "Links, addresses, routes, DNS, leases",
    ),
    r(
        "GET",
        "/api/v1/history",
        false,
        "json",
        "Resource samples of the last hour",
    ),
    r(
        "GET",
        "/api/v1/session",
        false,
        "json",
        "Who is asking; the session's CSRF token",
    ),
    r(
        "GET",
        "/api/v1/settings",
        false,
        "json",
        "Settings: effective values and their source (default, nuvol.toml, settings)",
    ),
    r(
        "PUT",
        "/api/v1/settings",
        false,
        "json",
        "Change settings (JSON: {\"discovery.zone\": \"north\", …}; null resets; admin.password needs current)",
    ),
    r(
        "POST",
        "/api/v1/settings",
        false,
        "json",
        "Change settings (form-friendly: same keys as fields, reset=KEY)",
    ),
    r(
        "GET",
        "/api/v1/tokens",
        false,
        "json",
        "API tokens (no secrets)",
    ),
    r(
        "POST",
        "/api/v1/tokens",
        false,
        "json",
        "Make an API token (JSON or form: name); the secret is shown once",
    ),
    r(
        "DELETE",
        "/api/v1/tokens/{id}",
        false,
        "json",
        "Revoke an API token",
    ),
    r(
        "POST",
        "/api/v1/tokens/{id}/revoke",
        false,
        "json",
        "Revoke an API token (form-friendly)",
    ),
    r(
        "POST",
        "/api/v1/system/reboot",
        false,
        "json",
        "Reboot the box (202)",
    ),
    r(
        "POST",
        "/api/v1/reset",
        false,
        "json",
        "Factory reset (JSON {\"confirm\": true} or form confirm=yes): recorded durably, then the box reboots, wipes its data partition and provisions itself from nuvol.toml (202)",
    ),
    r(
        "GET",
        "/api/v1/update",
        false,
        "json",
        "OS slots (version, running, default), the armed try and the update's state: pending, good or failed, tries and reason",
    ),
    r(
        "POST",
        "/api/v1/update",
        false,
        "json",
        "Apply a signed OS update (body: the .nvu file; ?allow_downgrade=1): checked, written to the inactive slot, read back, one-shot try armed for the next boot",
    ),
    r(
        "GET",
        "/api/v1/update/offers",
        false,
        "json",
        "OS updates the share providers in the catalog offer (version, arch, size, sha256), nearest first, each marked newer than what runs here or not; per-provider errors",
    ),
    r(
        "POST",
        "/api/v1/update/fetch",
        false,
        "json",
        "Download the OS update a node offers (JSON or form: node; ?allow_downgrade=1), checked against its description, then applied exactly as an upload",
    ),
    r(
        "GET",
        "/share/v1/os",
        true,
        "json",
        "Public: the OS update this box offers (the one it runs, marked good here): version, arch, size, sha256, key_id; 404 no_os_offer; plain HTTP too",
    ),
    r(
        "GET",
        "/share/v1/os.nvu",
        true,
        "binary",
        "Public: that artefact, byte for byte (a download slot of the share: 503 busy); plain HTTP too",
    ),
    r(
        "GET",
        "/api/v1/members",
        false,
        "json",
        "Community members (gossip): status, tags, zone, role, RTT",
    ),
    r(
        "GET",
        "/api/v1/services",
        false,
        "json",
        "Community services (type=, near=1, zone=), nearest healthy first",
    ),
    r(
        "GET",
        "/api/v1/events",
        false,
        "stream",
        "Membership and user events (Server-Sent Events, ids; since=ID or Last-Event-ID replays the last 50)",
    ),
    r(
        "POST",
        "/api/v1/events",
        false,
        "json",
        "Send a Serf user event (JSON: name, payload, coalesce)",
    ),
    r(
        "GET",
        "/api/v1/local-services",
        false,
        "json",
        "Services on this box: state, health, restarts, resources",
    ),
    r("GET", "/api/v1/services/{name}", false, "json", "One service on this box"),
    r("POST", "/api/v1/services/{name}/start", false, "json", "Start a service"),
    r("POST", "/api/v1/services/{name}/stop", false, "json", "Stop a service"),
    r("POST", "/api/v1/services/{name}/restart", false, "json", "Restart a service"),
    r(
        "GET",
        "/api/v1/services/{name}/logs",
        false,
        "stream",
        "Service logs (lines=N; follow=1 streams new lines)",
    ),
    r("GET", "/api/v1/bundles", false, "json", "Installed bundles"),
    r(
        "GET",
        "/api/v1/community/bundles",
        false,
        "json",
        "Bundles other boxes of the community offer (refresh=1 asks them again): node, version, publisher, sha256, size, installed_version, trusted; per-provider errors",
    ),
    r(
        "POST",
        "/api/v1/bundles/fetch",
        false,
        "json",
        "Download a bundle a node offers (JSON or form: node, name) into a pending upload, checked against its index; install it with pending/{id}/install",
    ),
    r(
        "GET",
        "/share/v1/bundles",
        true,
        "json",
        "Public: index of the bundles this box shares (name, version, publisher, publisher_key_id, digest, sha256, size); plain HTTP too",
    ),
    r(
        "GET",
        "/share/v1/bundles/{name}.nvb",
        true,
        "binary",
        "Public: one shared bundle, the signed file byte for byte (at most 8 downloads at once: 503 busy); plain HTTP too",
    ),
    r(
        "POST",
        "/api/v1/bundles",
        false,
        "json",
        "Install or upgrade (body: bundle file or multipart form)",
    ),
    r("POST", "/api/v1/bundles/verify", false, "json", "Verify only (body as for install): publisher, key, digest; kept as pending"),
    r("POST", "/api/v1/bundles/pending/{id}/install", false, "json", "Install a verified pending upload"),
    r("DELETE", "/api/v1/bundles/pending/{id}", false, "json", "Discard a pending upload"),
    r("GET", "/api/v1/bundles/{name}", false, "json", "One bundle"),
    r(
        "DELETE",
        "/api/v1/bundles/{name}",
        false,
        "json",
        "Remove (query purge=1 drops volumes)",
    ),
    r(
        "POST",
        "/api/v1/bundles/{name}/remove",
        false,
        "json",
        "Remove (form-friendly; purge=1)",
    ),
    r(
        "POST",
        "/api/v1/bundles/{name}/rollback",
        false,
        "json",
        "Back to the previous version",
    ),
    r(
        "GET",
        "/api/v1/keys",
        false,
        "json",
        "Trusted and revoked publisher keys",
    ),
    r(
        "POST",
        "/api/v1/keys",
        false,
        "json",
        "Trust a key (body: key file or base64 line)",
    ),
    r(
        "DELETE",
        "/api/v1/keys/{id}",
        false,
        "json",
        "Stop trusting a key",
    ),
    r(
        "GET",
        "/api/v1/storage",
        false,
        "json",
        "Space where bundles are kept: path, free_bytes, total_bytes, largest_bundle_bytes (an install needs twice the file plus 1 MiB)",
    ),
    r(
        "POST",
        "/api/v1/keys/{id}/revoke",
        false,
        "json",
        "Revoke a key for good (body: reason)",
    ),
    RouteDef {
        method: "POST",
        path: "/api/v1/debug/kill",
        public: false,
        test_hook: true,
        kind: "json",
        summary: "Test hook: the agent SIGKILLs itself",
    },
    RouteDef {
        method: "POST",
        path: "/api/v1/debug/kill-after-create",
        public: false,
        test_hook: true,
        kind: "json",
        summary: "Test hook: SIGKILL the agent right after it creates the next container, before it starts it",
    },
    RouteDef {
        method: "POST",
        path: "/api/v1/debug/hang",
        public: false,
        test_hook: true,
        kind: "json",
        summary: "Test hook: the agent SIGSTOPs itself (heartbeats stop; the watchdog resets the box)",
    },
    RouteDef {
        method: "POST",
        path: "/api/v1/debug/slow-reset",
        public: false,
        test_hook: true,
        kind: "json",
        summary: "Test hook: the next factory reset's wipe pauses 120 s after its first removal (first attempt only), so a test can cut the power mid-wipe",
    },
    RouteDef {
        method: "GET",
        path: "/api/v1/debug/login",
        public: true,
        test_hook: true,
        kind: "redirect",
        summary: "Test hook: log a browser in with ?token=<admin token>&next=/page (headless browser tests)",
    },
];

/// Whether `path` matches `pattern` (`{x}` = one non-empty segment).
pub fn matches(pattern: &str, path: &str) -> bool {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let mut p = pattern.split('/');
    let mut q = path.split('/');
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.starts_with('{') => {
                if b.is_empty() {
                    return false;
                }
            }
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The route serving `method` on `path` (HEAD counts as GET).
pub fn find(method: &str, path: &str, hooks: bool) -> Option<&'static RouteDef> {
    let m = if method == "HEAD" { "GET" } else { method };
    ROUTES
        .iter()
        .filter(|d| hooks || !d.test_hook)
        .find(|d| d.method == m && matches(d.path, path))
}

/// Whether any route (of any method) has this path.
pub fn path_known(path: &str, hooks: bool) -> bool {
    ROUTES
        .iter()
        .filter(|d| hooks || !d.test_hook)
        .any(|d| matches(d.path, path))
}

/// The route's pattern for metrics labels; `other` when unknown.
pub fn label(method: &str, path: &str, hooks: bool) -> &'static str {
    find(method, path, hooks).map_or("other", |d| d.path)
}

/// The OpenAPI 3.0 document for the routes served with `hooks` as given.
pub fn openapi(version: &str, hooks: bool) -> Value {
    let mut paths = Map::new();
    for d in ROUTES.iter().filter(|d| hooks || !d.test_hook) {
        let params: Vec<Value> = d
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.split_once('}')))
            .map(|(n, _)| n)
            .map(|n| json!({"name": n, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let media = match d.kind {
            "html" => "text/html",
            "text" => "text/plain",
            "stream" => "text/event-stream",
            "binary" => "application/octet-stream",
            _ => "application/json",
        };
        let mut op = json!({
            "summary": d.summary,
            "parameters": params,
            "responses": {
                "default": {
                    "description": "see summary; errors are {\"error\":{\"code\",\"message\"}}",
                    "content": { media: {} }
                }
            }
        });
        if !d.public {
            op["security"] = json!([{"bearer": []}, {"session": []}]);
        } else {
            op["security"] = json!([]);
        }
        let entry = paths
            .entry(d.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[d.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "nuvol agent API", "version": version },
        "paths": paths,
        "components": { "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": crate::auth::COOKIE}
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(matches("/api/v1/bundles/{name}", "/api/v1/bundles/web"));
        assert!(matches("/api/v1/bundles/{name}", "/api/v1/bundles/web/"));
        assert!(!matches("/api/v1/bundles/{name}", "/api/v1/bundles/"));
        assert!(!matches("/api/v1/bundles/{name}", "/api/v1/bundles/a/b"));
        assert!(matches("/", "/"));
        assert!(!matches("/", "/x"));
        assert_eq!(find("HEAD", "/", false).map(|d| d.kind), Some("html"));
        assert!(find("POST", "/api/v1/debug/kill", false).is_none());
        assert!(find("POST", "/api/v1/debug/kill", true).is_some());
    }

    #[test]
    fn doc_names_media_types() {
        let doc = openapi("0", false);
        let c = &doc["paths"]["/api/v1/status"]["get"]["responses"]["default"]["content"];
        assert!(c.get("application/json").is_some(), "{c}");
        let c = &doc["paths"]["/dashboard"]["get"]["responses"]["default"]["content"];
        assert!(c.get("text/html").is_some(), "{c}");
    }

    #[test]
    fn table_has_no_duplicates_and_doc_lists_all() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(!(a.method == b.method && a.path == b.path), "{a:?}");
            }
        }
        let doc = openapi("0", true);
        let n: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_object().unwrap().len())
            .sum();
        assert_eq!(n, ROUTES.len());
    }
}
