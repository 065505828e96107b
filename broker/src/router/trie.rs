//! The subscription index: a topic trie keyed by filter levels.
//!
//! `+` and `#` are stored as ordinary child names; matching walks the exact child, the `+`
//! child and the `#` child of each node, so a lookup costs O(levels x wildcard fan-out), not
//! O(subscriptions). Shared subscriptions (`$share/group/filter`) hang off the node of their
//! filter, one group per name, so they are matched by the same walk.
//! The trie owns no session state: a subscriber is an `Arc<str>` client id plus its options.

use std::collections::HashMap;
use std::sync::Arc;

use crate::mqtt::packet::SubscriptionOptions;

/// One session's subscription to a filter, as stored in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntry {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

#[derive(Debug, Default)]
struct Node {
    /// Children by exact level name.
    children: HashMap<Box<str>, Node>,
    /// The `+` child and the `#` child, kept apart so a lookup reaches all three in O(1).
    plus: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    subscribers: HashMap<Arc<str>, SubEntry>,
    shared: HashMap<Box<str>, SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.subscribers.is_empty()
            && self.shared.is_empty()
    }

    fn child_mut(&mut self, level: &str) -> &mut Node {
        match level {
            "+" => self.plus.get_or_insert_with(Box::default),
            "#" => self.hash.get_or_insert_with(Box::default),
            _ => self.children.entry(level.into()).or_default(),
        }
    }
}

/// The members of one shared-subscription group on one filter. Messages go to one member,
/// round robin (the router skips members that cannot take the message).
#[derive(Debug, Default)]
pub struct SharedGroup {
    pub members: Vec<(Arc<str>, SubEntry)>,
    pub next: usize,
}

/// What one lookup found.
#[derive(Debug, Default)]
pub struct Matches<'a> {
    pub subscribers: Vec<(&'a Arc<str>, SubEntry)>,
    pub groups: Vec<&'a mut SharedGroup>,
}

#[derive(Debug, Default)]
pub struct SubscriptionTrie {
    root: Node,
    count: usize,
}

impl SubscriptionTrie {
    pub fn new() -> SubscriptionTrie {
        SubscriptionTrie::default()
    }

    /// Number of (client, filter) subscriptions held, shared ones included.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces a subscription. Returns true when it replaced an existing one.
    pub fn insert(
        &mut self,
        filter: &str,
        group: Option<&str>,
        client: &Arc<str>,
        entry: SubEntry,
    ) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_mut(level);
        }
        let replaced = match group {
            None => node.subscribers.insert(client.clone(), entry).is_some(),
            Some(g) => {
                let group = node.shared.entry(g.into()).or_default();
                match group.members.iter_mut().find(|(c, _)| c == client) {
                    Some(member) => {
                        member.1 = entry;
                        true
                    }
                    None => {
                        group.members.push((client.clone(), entry));
                        false
                    }
                }
            }
        };
        if !replaced {
            self.count += 1;
        }
        replaced
    }

    /// Removes a subscription. Returns true when it existed.
    pub fn remove(&mut self, filter: &str, group: Option<&str>, client: &str) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_rec(&mut self.root, &levels, group, client);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Every subscription whose filter matches `topic` (a valid topic name).
    pub fn matches(&mut self, topic: &str) -> Matches<'_> {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        let mut out = Matches::default();
        collect(&mut self.root, &levels, 0, dollar, &mut out);
        out
    }
}

fn remove_rec(node: &mut Node, levels: &[&str], group: Option<&str>, client: &str) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return match group {
            None => node.subscribers.remove(client).is_some(),
            Some(g) => {
                let Some(shared) = node.shared.get_mut(g) else {
                    return false;
                };
                let before = shared.members.len();
                shared.members.retain(|(c, _)| &**c != client);
                let removed = shared.members.len() != before;
                if shared.members.is_empty() {
                    node.shared.remove(g);
                }
                removed
            }
        };
    };
    let child = match *first {
        "+" => node.plus.as_deref_mut(),
        "#" => node.hash.as_deref_mut(),
        name => node.children.get_mut(name),
    };
    let Some(child) = child else {
        return false;
    };
    let removed = remove_rec(child, rest, group, client);
    if child.is_empty() {
        match *first {
            "+" => node.plus = None,
            "#" => node.hash = None,
            name => {
                node.children.remove(name);
            }
        }
    }
    removed
}

fn collect<'a>(
    node: &'a mut Node,
    levels: &[&str],
    depth: usize,
    dollar: bool,
    out: &mut Matches<'a>,
) {
    // MQTT-4.7.2-1: topics starting with '$' are not matched by a leading wildcard.
    let wildcards_allowed = !(depth == 0 && dollar);
    let Node {
        children,
        plus,
        hash,
        subscribers,
        shared,
    } = node;
    let Some((level, rest)) = levels.split_first() else {
        add(subscribers, shared, out);
        // "sport/#" also matches "sport" (MQTT-4.7.1-2).
        if let Some(h) = hash.as_deref_mut() {
            add(&h.subscribers, &mut h.shared, out);
        }
        return;
    };
    if let Some(child) = children.get_mut(*level) {
        collect(child, rest, depth + 1, dollar, out);
    }
    if wildcards_allowed {
        if let Some(p) = plus.as_deref_mut() {
            collect(p, rest, depth + 1, dollar, out);
        }
        if let Some(h) = hash.as_deref_mut() {
            add(&h.subscribers, &mut h.shared, out);
        }
    }
}

fn add<'a>(
    subscribers: &'a HashMap<Arc<str>, SubEntry>,
    shared: &'a mut HashMap<Box<str>, SharedGroup>,
    out: &mut Matches<'a>,
) {
    out.subscribers
        .extend(subscribers.iter().map(|(c, e)| (c, *e)));
    out.groups.extend(shared.values_mut());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::packet::QoS;

    fn entry() -> SubEntry {
        SubEntry {
            options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
            identifier: None,
        }
    }

    fn matched(trie: &mut SubscriptionTrie, topic: &str) -> Vec<String> {
        let mut v: Vec<String> = trie
            .matches(topic)
            .subscribers
            .iter()
            .map(|(c, _)| c.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn wildcards_match_as_the_spec_says() {
        let cases: &[(&str, &str, bool)] = &[
            ("a/b/c", "a/b/c", true),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a/b/d", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "a/b", true),
            ("+/+", "a", false),
            ("+", "/a", false),
            ("+/a", "/a", true),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/+", "$SYS/x", true),
            ("a/b", "a/b/c", false),
        ];
        for (filter, topic, want) in cases {
            let mut trie = SubscriptionTrie::new();
            trie.insert(filter, None, &Arc::from("c"), entry());
            assert_eq!(
                !matched(&mut trie, topic).is_empty(),
                *want,
                "{filter} vs {topic}"
            );
            assert_eq!(
                crate::mqtt::topic::matches(filter, topic),
                *want,
                "topic::matches {filter} vs {topic}"
            );
        }
    }

    #[test]
    fn insert_remove_and_count() {
        let mut trie = SubscriptionTrie::new();
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        assert!(!trie.insert("x/+", None, &a, entry()));
        assert!(trie.insert("x/+", None, &a, entry()));
        trie.insert("x/#", None, &b, entry());
        trie.insert("x/+", Some("g"), &b, entry());
        assert_eq!(trie.len(), 3);
        assert_eq!(matched(&mut trie, "x/1"), vec!["a", "b"]);
        assert_eq!(trie.matches("x/1").groups.len(), 1);
        assert!(trie.remove("x/+", None, "a"));
        assert!(!trie.remove("x/+", None, "a"));
        assert!(trie.remove("x/+", Some("g"), "b"));
        assert_eq!(matched(&mut trie, "x/1"), vec!["b"]);
        assert!(trie.remove("x/#", None, "b"));
        assert!(trie.is_empty());
        assert!(trie.root.is_empty(), "empty nodes are pruned");
    }

    #[test]
    fn agrees_with_the_reference_matcher() {
        use proptest::prelude::*;
        let level = prop::sample::select(vec!["a", "b", "", "$x"]);
        let flevel = prop::sample::select(vec!["a", "b", "", "+", "$x"]);
        let topic = prop::collection::vec(level, 1..4).prop_map(|v| v.join("/"));
        let filter = (prop::collection::vec(flevel, 1..4), any::<bool>()).prop_map(|(v, hash)| {
            let mut f = v.join("/");
            if hash {
                f.push_str("/#");
            }
            f
        });
        proptest!(|(filters in prop::collection::vec(filter, 1..8), topic in topic)| {
            let mut trie = SubscriptionTrie::new();
            for (i, f) in filters.iter().enumerate() {
                trie.insert(f, None, &Arc::from(i.to_string()), entry());
            }
            let mut want: Vec<String> = filters.iter().enumerate()
                .filter(|(_, f)| crate::mqtt::topic::matches(f, &topic))
                .map(|(i, _)| i.to_string()).collect();
            want.sort();
            want.dedup();
            prop_assert_eq!(matched(&mut trie, &topic), want);
        });
    }
}
