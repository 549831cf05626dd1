//! Session resumption state (TLS 1.3 tickets, the TLS 1.2 session-ID
//! cache), one per authentication context.
//!
//! A resumed session carries what its first handshake proved, in
//! particular the client certificate chain of a mutual-TLS listener. So a
//! session may only resume where that proof would still be asked for the
//! same way: a session made on a listener without `client_ca` must not
//! resume on one with it (the client would skip the certificate it does
//! not have), and a session made under an old `client_ca` must not
//! resume after a reload changed it (removing a CA is how access is
//! revoked). rustls checks a resumed session's SNI and cipher suite, not
//! the listener's client-auth policy, so the policy decides which state a
//! listener gets: listeners with the same policy share one ticket key
//! source and one session cache (a client resumes on any of them, on any
//! shard, and across reloads that keep the policy), and every other
//! policy has its own. This is what OpenSSL's session-ID context does for
//! nginx.
//!
//! The states live in a process-wide table of weak references, looked up
//! at config load (never on the handshake path): a policy's state lives
//! as long as some loaded config uses it, so a reload that keeps the
//! policy finds the same state, and one no config uses any more is freed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use rustls::server::{ProducesTickets, ServerSessionMemoryCache};

use super::client_auth::ClientAuth;

/// TLS 1.2 sessions remembered for session-ID resumption, per context.
pub const SESSION_CACHE_SIZE: usize = 20_000;

/// One authentication context's resumption state.
pub struct Resumption {
    /// TLS 1.3 ticket keys (rotating every 6 hours; the previous key is
    /// still accepted: rustls' `TicketRotator`, 12 h ticket lifetime).
    pub ticketer: Arc<dyn ProducesTickets>,
    /// TLS 1.2 session IDs.
    pub cache: Arc<ServerSessionMemoryCache>,
}

/// The bytes that identify a client-auth policy: empty without
/// `client_ca`, else every trust anchor of the bundle (subject, public
/// key, name constraints), each length-prefixed so no two bundles give
/// the same bytes. Compared whole, not hashed: no collision to reason
/// about.
pub fn context(auth: Option<&ClientAuth>) -> Vec<u8> {
    let Some(auth) = auth else {
        return Vec::new();
    };
    let mut out = b"client_ca".to_vec();
    let mut put = |part: &[u8]| {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    };
    for anchor in &auth.roots.roots {
        put(anchor.subject.as_ref());
        put(anchor.subject_public_key_info.as_ref());
        put(anchor
            .name_constraints
            .as_ref()
            .map_or(&[][..], |n| n.as_ref()));
    }
    out
}

/// The resumption state for a context (see [`context`]): the one already
/// in use by a loaded config, else a new one.
pub fn for_context(context: Vec<u8>) -> Arc<Resumption> {
    static TABLE: OnceLock<Mutex<HashMap<Vec<u8>, Weak<Resumption>>>> = OnceLock::new();
    let mut table = TABLE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(live) = table.get(&context).and_then(Weak::upgrade) {
        return live;
    }
    table.retain(|_, w| w.strong_count() > 0);
    let state = Arc::new(Resumption {
        ticketer: super::provider::new_ticketer().expect("the system random source works"),
        cache: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
    });
    table.insert(context, Arc::downgrade(&state));
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{Der, TrustAnchor};
    use rustls::RootCertStore;

    fn auth(subjects: &[&'static [u8]]) -> ClientAuth {
        let mut roots = RootCertStore::empty();
        for s in subjects {
            roots.roots.push(TrustAnchor {
                subject: Der::from_slice(s),
                subject_public_key_info: Der::from_slice(b"key"),
                name_constraints: None,
            });
        }
        ClientAuth {
            roots: Arc::new(roots),
            header: "X-Client-Subject".into(),
        }
    }

    #[test]
    fn contexts_differ_by_client_auth_policy() {
        let none = context(None);
        let a = context(Some(&auth(&[b"CA one"])));
        let a_again = context(Some(&auth(&[b"CA one"])));
        let b = context(Some(&auth(&[b"CA two"])));
        let ab = context(Some(&auth(&[b"CA one", b"CA two"])));
        assert_eq!(a, a_again);
        for (x, y) in [(&none, &a), (&a, &b), (&a, &ab), (&b, &ab)] {
            assert_ne!(x, y);
        }
        // Length prefixes: moving a byte between parts changes the bytes.
        let split1 = context(Some(&auth(&[b"ab", b"c"])));
        let split2 = context(Some(&auth(&[b"a", b"bc"])));
        assert_ne!(split1, split2);
    }

    #[test]
    fn one_state_per_context_while_in_use() {
        let ctx = |s: &str| format!("test context {s}").into_bytes();
        let a1 = for_context(ctx("a"));
        let a2 = for_context(ctx("a"));
        let b = for_context(ctx("b"));
        assert!(Arc::ptr_eq(&a1, &a2), "same context, same state");
        assert!(!Arc::ptr_eq(&a1, &b), "another context, another state");
        // A ticket opens only in its own context.
        let ticket = a1.ticketer.encrypt(b"session state").unwrap();
        assert_eq!(
            a2.ticketer.decrypt(&ticket).as_deref(),
            Some(&b"session state"[..])
        );
        assert_eq!(b.ticketer.decrypt(&ticket), None);
        // The table does not keep a state no config uses.
        let weak = Arc::downgrade(&b);
        drop(b);
        assert!(weak.upgrade().is_none());
        let b2 = for_context(ctx("b"));
        assert_eq!(b2.ticketer.decrypt(&ticket), None);
    }
}
