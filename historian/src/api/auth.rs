//! Authorization, in one place: `Access::authorize` decides whether a
//! client identity may read a tag. It is compiled from the `clients`
//! config (per-identity tag patterns, deny by default) and is pure, so a
//! policy engine can replace it without touching the handlers.

use std::collections::HashMap;
use std::fmt;

use crate::api::config::ClientConfig;
use crate::pattern;

/// Who is asking: the CN of the client certificate over HTTPS, or `local`
/// for plain HTTP on loopback.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientIdentity(String);

impl ClientIdentity {
    /// An identity from its name.
    pub fn new(name: &str) -> Self {
        ClientIdentity(name.to_owned())
    }

    /// The name rules refer to.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The compiled read rules: identity → tag patterns.
#[derive(Clone, Debug, Default)]
pub struct Access {
    rules: HashMap<String, Vec<String>>,
}

impl Access {
    /// Compiles the `clients` config; rules for one identity add up.
    pub fn compile(clients: &[ClientConfig]) -> Self {
        let mut rules: HashMap<String, Vec<String>> = HashMap::new();
        for c in clients {
            rules
                .entry(c.identity.clone())
                .or_default()
                .extend(c.tags.iter().cloned());
        }
        Access { rules }
    }

    /// Whether `identity` may read `tag`. Default deny: an identity
    /// without rules reads nothing.
    pub fn authorize(&self, identity: &ClientIdentity, tag: &str) -> bool {
        self.rules
            .get(identity.as_str())
            .is_some_and(|patterns| patterns.iter().any(|p| pattern::matches(p, tag)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_by_default() {
        let access = Access::compile(&[
            ClientConfig::new("a", &["plant1/*"]),
            ClientConfig::new("a", &["shared"]),
            ClientConfig::new("local", &["*"]),
        ]);
        let a = ClientIdentity::new("a");
        assert!(access.authorize(&a, "plant1/temp"));
        assert!(access.authorize(&a, "shared"));
        assert!(!access.authorize(&a, "plant2/temp"));
        assert!(!access.authorize(&ClientIdentity::new("b"), "plant1/temp"));
        assert!(access.authorize(&ClientIdentity::new("local"), "anything"));
    }
}
