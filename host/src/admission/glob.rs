//! Repository-name globs for `admission.chains`, with the same rules as the auth-acl plugin's
//! (`berth_plugin_sdk::auth::glob_match`), so a site writes one pattern language.

/// True when repository `name` matches `pattern`.
///
/// - `*` matches any run of characters within one segment: `team-a/*` matches `team-a/app`, not
///   `team-a/app/web`; `app-*` matches `app-web`.
/// - `**` as a whole segment matches any number of segments: `team-a/**` matches `team-a/x` and
///   `team-a/x/y`; `**/cache` matches `cache` and `a/b/cache`; `a/**/b` matches `a/b` and
///   `a/x/y/b`; `**` alone matches every name.
/// - A trailing `/**` needs at least one segment: **`team-a/**` does not match `team-a`
///   itself.** A namespace and the repository of the same name are different things, so
///   granting one never silently grants the other; write both (`team-a` and `team-a/**`) to mean
///   both.
/// - Everything else matches itself, case-sensitively.
///
/// It allocates nothing, so a policy can call it on every request.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    segments(Some(pattern), Some(name))
}

/// The first segment and the rest (`None` once there is no `/`).
fn split(s: &str) -> (&str, Option<&str>) {
    match s.split_once('/') {
        Some((head, rest)) => (head, Some(rest)),
        None => (s, None),
    }
}

fn segments(pattern: Option<&str>, name: Option<&str>) -> bool {
    let Some(pattern) = pattern else { return name.is_none() };
    let (p, p_rest) = split(pattern);
    if p == "**" {
        // None of the name: only between slashes or leading (`a/**/b`, `**/b`), never trailing.
        if p_rest.is_some() && segments(p_rest, name) {
            return true;
        }
        // One segment, then either stop or keep consuming.
        let Some(name) = name else { return false };
        let (_, n_rest) = split(name);
        return segments(p_rest, n_rest) || (n_rest.is_some() && segments(Some(pattern), n_rest));
    }
    let Some(name) = name else { return false };
    let (n, n_rest) = split(name);
    segment(p.as_bytes(), n.as_bytes()) && segments(p_rest, n_rest)
}

/// One segment with `*` wildcards: the usual greedy match that backtracks to the last `*`.
fn segment(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last `*` swallow one more byte and retry after it.
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("library/alpine", "library/alpine"));
        assert!(glob_match("team-a/*", "team-a/app"));
        assert!(!glob_match("team-a/*", "team-a/app/web"));
        assert!(glob_match("team-a/**", "team-a/x/y"));
        assert!(!glob_match("team-a/**", "team-a"));
        assert!(glob_match("**", "a/b/c"));
        assert!(glob_match("**/cache", "cache"));
        assert!(glob_match("app-*-lts", "app-web-lts"));
    }
}
