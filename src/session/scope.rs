//! Ids scoped by provider (SPEC §3.7): a `sid`, `sub` or logout-token `jti` of one provider
//! must never match another's. Everything the stores index or record — session rows' `sub` and
//! `sid`, revocation entries, spent `jti`s — is written in its scoped form:
//!
//! - "default": the id itself, so that rows and entries written before several providers
//!   existed keep matching;
//! - any other provider: `U+0001 <name> U+0001 <id>`.
//!
//! The encoding is injective: ID and logout tokens whose ids hold control characters are
//! refused (`oidc::id_token::has_control`), so no "default" id starts with U+0001, and names
//! (`[a-z0-9-]`) hold no U+0001, so the second separator ends the name. One store schema, one
//! key layout and one revocation list thus serve every provider without collisions.

use crate::settings::DEFAULT_PROVIDER;
use std::borrow::Cow;

const SEP: char = '\u{1}';

pub fn scoped<'a>(provider: &str, id: &'a str) -> Cow<'a, str> {
    if provider == DEFAULT_PROVIDER {
        return Cow::Borrowed(id);
    }
    let mut s = String::with_capacity(provider.len() + id.len() + 2);
    s.push(SEP);
    s.push_str(provider);
    s.push(SEP);
    s.push_str(id);
    Cow::Owned(s)
}

#[cfg(test)]
mod tests {
    use super::scoped;

    #[test]
    fn scoped_ids_of_different_providers_never_meet() {
        assert_eq!(scoped("default", "abc"), "abc");
        let mut seen = std::collections::HashSet::new();
        for p in ["default", "a", "b", "ab", "a-b"] {
            for id in ["abc", "", "a", "b", "ba"] {
                assert!(seen.insert(scoped(p, id).into_owned()), "{p} {id}");
            }
        }
    }
}
