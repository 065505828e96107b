//! Tag patterns, shared by storage's tag search, the API's search and its
//! authorization, so that a client sees in search exactly the tags it may
//! read: `*` matches any run of characters (`/` included: tag names are flat strings, as in PI), `?`
//! exactly one character, everything else itself. There is no escape and
//! no `**`; a pattern without wildcards is an exact name.

/// Longest pattern accepted: matching costs pattern × name in the worst case.
pub const MAX_PATTERN_LEN: usize = 256;

/// Whether `name` matches `pattern`. Greedy with one backtrack point (the
/// last `*`), so the cost is at most `pattern.len() * name.len()` steps.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, name index).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match (p.get(pi), n.get(ni)) {
            (Some('*'), _) => {
                star = Some((pi + 1, ni));
                pi += 1;
            }
            (Some('?'), Some(_)) => {
                pi += 1;
                ni += 1;
            }
            (Some(a), Some(b)) if a == b => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    // Let the last `*` swallow one more character.
                    pi = sp;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.iter().skip(pi).all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn glob_table() {
        let cases = [
            ("*", "", true),
            ("*", "plant1/temp", true),
            ("plant1/*", "plant1/temp", true),
            ("plant1/*", "plant1/a/b", true),
            ("plant1/*", "plant2/temp", false),
            ("plant?/temp", "plant1/temp", true),
            ("plant?/temp", "plant12/temp", false),
            ("*temp", "plant1/temp", true),
            ("*te*mp*", "xtexxmpx", true),
            ("a*b*c", "abxbxc", true),
            ("a*b*c", "abxbx", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "a", false),
            ("é?", "éß", true),
            ("plant/*/temp", "plant/line1/temp", true),
            ("plant/*/temp", "plant/line1/pressure", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*temp*", "x_temp_y", true),
            ("abc", "abcd", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("é?", "éà", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(matches(p, n), want, "{p:?} vs {n:?}");
        }
    }
}
