//! Console sessions: an API key signs in once and the browser then holds only a random session
//! token in an HTTP-only, `SameSite=Strict` cookie. The session keeps the key's hash (never the
//! key), so a revoked key ends its sessions at the next request. Every session has its own CSRF
//! token, which every form carries and every `POST` checks; the sign-in form, before any
//! session exists, uses a double-submit cookie instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use rand::RngCore;

use crate::http::hash_key;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cc_console";
/// The sign-in form's double-submit CSRF cookie.
pub const SIGN_IN_COOKIE: &str = "cc_console_signin";
/// The form field every `POST` of the console carries its CSRF token in.
pub const CSRF_FIELD: &str = "csrf";
/// A session unused for this long is over.
pub const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// The most sessions kept; signing in past it ends the least recently used one.
pub const MAX_SESSIONS: usize = 10_000;

/// A random token: 256 bits, hex.
pub(crate) fn token() -> String {
    let mut buf = [0u8; 32];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two tokens in time independent of where they differ.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: HTTP-only, same-site strict, scoped to `path`; `max_age` `0` deletes it.
pub(crate) fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The SHA-256 of the API key that signed in.
    pub(crate) key_hash: String,
    /// The session's CSRF token.
    pub(crate) csrf: String,
    last_seen: Instant,
}

/// The sessions of one console, in memory (keyed by the hash of their token).
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session for the key whose hash is `key_hash`: its token (for the cookie) and
    /// its CSRF token. At [`MAX_SESSIONS`], the least recently used session ends first.
    pub(crate) fn create(&self, key_hash: String) -> (String, String) {
        let token = token();
        let csrf = self::token();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| now.duration_since(s.last_seen) < SESSION_IDLE);
        }
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            hash_key(&token),
            Session {
                key_hash,
                csrf: csrf.clone(),
                last_seen: now,
            },
        );
        (token, csrf)
    }

    /// The live session of `token`, marked as used now.
    pub(crate) fn get(&self, token: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = hash_key(token);
        let now = Instant::now();
        let session = map.get_mut(&key)?;
        if now.duration_since(session.last_seen) >= SESSION_IDLE {
            map.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends the session of `token`.
    pub(crate) fn remove(&self, token: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&hash_key(token));
    }

    /// How many sessions are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_only_when_equal_and_not_empty() {
        let t = token();
        assert_eq!(t.len(), 64);
        assert!(same_token(&t, &t.clone()));
        assert!(!same_token(&t, &token()));
        assert!(!same_token(&t, &t[..63]));
        assert!(!same_token("", ""));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, "a=1; cc_console_x=2".parse().unwrap());
        h.append(COOKIE, "cc_console=3".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("3"));
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn a_session_is_found_by_its_token_until_removed() {
        let sessions = Sessions::default();
        let (t, csrf) = sessions.create("h".into());
        let s = sessions.get(&t).unwrap();
        assert_eq!(s.key_hash, "h");
        assert_eq!(s.csrf, csrf);
        assert!(sessions.get(&token()).is_none());
        sessions.remove(&t);
        assert!(sessions.get(&t).is_none());
    }

    #[test]
    fn at_the_limit_the_least_recently_used_session_ends() {
        let sessions = Sessions::default();
        let (first, _) = sessions.create("first".into());
        let mut others = Vec::new();
        for i in 1..MAX_SESSIONS {
            others.push(sessions.create(format!("k{i}")).0);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        // Using the first session makes the second the least recently used.
        std::thread::sleep(Duration::from_millis(2));
        assert!(sessions.get(&first).is_some());
        let (_newest, _) = sessions.create("newest".into());
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.get(&first).is_some());
        assert!(sessions.get(&others[0]).is_none());
    }
}
