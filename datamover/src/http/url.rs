//! The URL of a download, split into what is requested, what messages may show, and the
//! credentials it carried (`user:pass@`), which never reach a message.

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Url {
    /// The URL without credentials or fragment: what is requested.
    pub request: String,
    /// For messages: no credentials, and a query (often a signed token) shown as `?…`.
    pub shown: String,
    /// `Basic …` from the URL's credentials, sent to this URL only (never after a redirect).
    pub auth: Option<String>,
    pub https: bool,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url> {
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("https://") {
            (true, &url[8..])
        } else if lower.starts_with("http://") {
            (false, &url[7..])
        } else {
            return Err(Error::invalid("the URL must start with http:// or https://"));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, host) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let scheme = if https { "https" } else { "http" };
        let (path, query) = match tail.find('?') {
            Some(i) => (&tail[..i], Some(&tail[i..])),
            None => (tail, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        let shown = format!("{scheme}://{host}{path}{}", if query.is_some() { "?…" } else { "" });
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(format!("invalid URL {shown}: no host")));
        }
        if tail.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(format!("invalid URL {shown}: spaces or control characters")));
        }
        let auth = userinfo.map(|u| format!("Basic {}", base64(&percent_decode(u))));
        Ok(Url { request: format!("{scheme}://{host}{path}{}", query.unwrap_or("")), shown, auth, https })
    }
}

/// Shows a URL the server gave (a redirect target) the way `Url::shown` does.
pub fn show(url: &str) -> String {
    Url::parse(url).map(|u| u.shown).unwrap_or_else(|_| "(an invalid URL)".to_string())
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_queries_stay_out_of_messages() {
        let u = Url::parse("https://us%65r:p%40ss@example.com:8443/t/a.qcow2?sig=SECRET#frag").expect("parse");
        assert_eq!(u.request, "https://example.com:8443/t/a.qcow2?sig=SECRET");
        assert_eq!(u.shown, "https://example.com:8443/t/a.qcow2?…");
        // "user:p@ss"
        assert_eq!(u.auth.as_deref(), Some("Basic dXNlcjpwQHNz"));
        assert!(u.https);
        let u = Url::parse("HTTP://h").expect("parse");
        assert_eq!((u.request.as_str(), u.shown.as_str(), u.auth, u.https), ("http://h/", "http://h/", None, false));
        for bad in ["ftp://h/x", "h/x", "http:///x", "http://a:b@/x", "http://h/a b"] {
            let e = Url::parse(bad).expect_err(bad);
            assert!(!e.message.contains(":b@"), "{}", e.message);
        }
    }

    #[test]
    fn base64_pads_like_the_rfc() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg==")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
