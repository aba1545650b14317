//! JSON pointers (RFC 6901): building them with escaping, walking up their ancestors.

/// `pointer`, then each of its ancestors up to the root `""`.
pub(super) fn pointer_and_ancestors(pointer: &str) -> impl Iterator<Item = &str> {
    let cuts = pointer.rmatch_indices('/').map(|(i, _)| i);
    std::iter::once(pointer).chain(cuts.map(move |i| &pointer[..i]))
}

/// Joins a token to a JSON pointer, escaping `~` and `/` (RFC 6901).
pub(crate) fn join_pointer(pointer: &str, token: &str) -> String {
    let mut s = String::with_capacity(pointer.len() + token.len() + 1);
    s.push_str(pointer);
    push_token(&mut s, token);
    s
}

/// Appends `/token` to a JSON pointer, escaping `~` and `/` (RFC 6901).
pub(crate) fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    for c in token.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}
